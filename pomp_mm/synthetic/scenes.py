"""Multi-object scene sets for open-vocabulary segmentation and detection, on disk in the
toolkits' own formats (one folder serves both).

``root/images/<split>/<id>.png``
    The rendered scenes (RGB).
``root/labels/<split>/<id>.png``
    mmseg label maps (uint8): 0 background, ``k + 1`` scene class ``k`` (the ADE20K convention,
    read by mmseg's ``BaseSegDataset`` with ``reduce_zero_label=True``: background becomes 255,
    ignored, and class ``k`` becomes ``k``).
``root/splits/<split>.txt``
    The image ids of the split (mmseg's ``ann_file``), written after all images.
``root/annotations/instances_<split>.json``
    COCO instances of the visible pixels (box, area, RLE mask; category id ``k + 1``), read by
    mmdet's ``CocoDataset``. Objects hidden entirely by later ones are left out (counted in the
    json's ``info``).

Scene classes are :func:`~pomp_mm.synthetic.protocol.scene_classes` (colour + shape names);
patterns and backgrounds are random, so a class is recognised by its colour and shape.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .protocol import scene_classes
from .render import Scene, SceneObject, check_seed, check_size, object_rng, render_scene
from .world import BACKGROUNDS, PATTERNS

__all__ = ['SCENE_SIZE', 'MAX_OBJECTS', 'scene_at', 'write_scene_set', 'read_split']

logger = logging.getLogger(__name__)

SCENE_SIZE = 128
MAX_OBJECTS = 4
_SCENE_CONTENT_STREAM = 21


def scene_at(seed: int, index: int, class_ids: Optional[Sequence[int]] = None,
             size: int = SCENE_SIZE, max_objects: int = MAX_OBJECTS) -> Tuple[Scene, List[int]]:
    """Scene ``index`` of ``seed``: 1..``max_objects`` objects of classes drawn from
    ``class_ids`` (default: all scene classes) on a random background.

    Returns:
        The rendered :class:`~pomp_mm.synthetic.render.Scene` and the scene-class id of each of
        its objects (bottom to top).
    """
    check_seed(seed)
    classes = scene_classes()
    pool = list(range(len(classes))) if class_ids is None else list(class_ids)
    bad = [k for k in pool if not (isinstance(k, (int, np.integer)) and 0 <= k < len(classes))]
    if not pool or bad:
        raise ValueError(f'class_ids must be ids in 0..{len(classes) - 1}, got '
                         f'{bad[0] if bad else "none"!r}')
    if not 1 <= max_objects <= 16:
        raise ValueError(f'max_objects must be in 1..16, got {max_objects!r}')
    rng = object_rng(seed, index, _SCENE_CONTENT_STREAM)
    num = int(rng.integers(1, max_objects + 1))
    ids = [pool[int(rng.integers(len(pool)))] for _ in range(num)]
    objects = [SceneObject(PATTERNS[int(rng.integers(len(PATTERNS)))], classes[k].colour,
                           classes[k].shape) for k in ids]
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    return render_scene(objects, background, seed, index, size=size), ids


def _label_map(scene: Scene, ids: Sequence[int]) -> np.ndarray:
    lut = np.array([0] + [k + 1 for k in ids], dtype=np.uint8)
    return lut[scene.labels]


def _coco_annotations(scene: Scene, ids: Sequence[int], image_id: int,
                      first_id: int) -> List[Dict[str, Any]]:
    from pycocotools import mask as mask_utils
    anns = []
    for i, k in enumerate(ids):
        if scene.areas[i] == 0:
            continue
        rle = mask_utils.encode(np.asfortranarray((scene.labels == i + 1).astype(np.uint8)))
        x0, y0, x1, y1 = (float(v) for v in scene.boxes[i])
        anns.append({'id': first_id + len(anns), 'image_id': image_id, 'category_id': k + 1,
                     'bbox': [x0, y0, x1 - x0, y1 - y0], 'area': float(scene.areas[i]),
                     'segmentation': {'size': list(rle['size']),
                                      'counts': rle['counts'].decode('ascii')},
                     'iscrowd': 0})
    return anns


def write_scene_set(root: str, split: str, count: int, seed: int,
                    class_ids: Optional[Sequence[int]] = None, size: int = SCENE_SIZE,
                    max_objects: int = MAX_OBJECTS, progress: bool = True) -> Dict[str, str]:
    """Render ``count`` scenes of ``seed`` into ``root`` as split ``split`` (layout above).

    Images and label maps already on disk (an interrupted run) are kept; the split file and the
    COCO json are written last, so their presence means a complete split.

    Returns:
        Paths: ``images``, ``labels`` (folders), ``split`` (mmseg ann_file), ``coco`` (json).
    """
    from PIL import Image
    from tqdm import tqdm

    from ..fileio import atomic_write
    if not split or not split.replace('_', '').replace('-', '').isalnum():
        raise ValueError(f'split must be a plain name like "train", got {split!r}')
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10 ** 6:
        raise ValueError(f'count must be an integer in 1..1000000, got {count!r}')
    size = check_size(size)
    classes = scene_classes()
    paths = {'images': os.path.join(root, 'images', split),
             'labels': os.path.join(root, 'labels', split),
             'split': os.path.join(root, 'splits', f'{split}.txt'),
             'coco': os.path.join(root, 'annotations', f'instances_{split}.json')}
    for key in ('images', 'labels'):
        os.makedirs(paths[key], exist_ok=True)
    images, annotations, hidden = [], [], 0
    for index in tqdm(range(count), desc=f'rendering {split} scenes', unit='scene',
                      disable=not progress):
        name = f'{index:06d}'
        scene, ids = scene_at(seed, index, class_ids, size, max_objects)
        for key, array in (('images', scene.image), ('labels', _label_map(scene, ids))):
            path = os.path.join(paths[key], f'{name}.png')
            if not os.path.isfile(path):
                Image.fromarray(array).save(path + '.tmp', format='PNG')
                os.replace(path + '.tmp', path)
        images.append({'id': index + 1, 'file_name': f'{name}.png', 'width': size,
                       'height': size})
        anns = _coco_annotations(scene, ids, index + 1, len(annotations) + 1)
        hidden += len(ids) - len(anns)
        annotations.extend(anns)
    if hidden:
        logger.info('%s: %d of %d objects are hidden by others and have no annotation', split,
                    hidden, hidden + len(annotations))
    coco = {'info': {'description': f'pomp_mm synthetic scenes, split {split}', 'seed': seed,
                     'hidden_objects': hidden},
            'images': images, 'annotations': annotations,
            'categories': [{'id': k + 1, 'name': c.name} for k, c in enumerate(classes)]}
    payload = json.dumps(coco).encode()
    atomic_write(paths['coco'], lambda f: f.write(payload))
    ids_text = ''.join(f'{index:06d}\n' for index in range(count)).encode()
    atomic_write(paths['split'], lambda f: f.write(ids_text))
    return paths


def read_split(root: str, split: str) -> List[str]:
    """The image ids of a written split."""
    path = os.path.join(root, 'splits', f'{split}.txt')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'no split {split!r} under {root!r} (missing {path}); write '
                                'it with write_scene_set')
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]
