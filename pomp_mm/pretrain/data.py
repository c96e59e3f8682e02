"""Image datasets for prompt pre-training: ImageNet-21K layouts and generic image lists.

Labels index a :class:`~pomp_mm.vocabulary.Vocabulary`, so the label space is the whole
vocabulary (every class is a possible negative) even when some classes have no images on disk.
Unreadable or truncated images are skipped (``None`` samples dropped by :func:`collate_views`)
and counted, never crashing a long run.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import random
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.registry import DATASETS, FUNCTIONS
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch.utils.data import Dataset

from ..fileio import atomic_write
from ..imagefiles import labelled_images, list_class_folders, list_images
from ..vocabulary import Vocabulary, load_vocabulary, parse_vocabulary
from .randaugment import DasslRandAugment

__all__ = ['ImageNet21K', 'ImageList', 'collate_views', 'few_shot_split', 'build_transform',
           'resolve_preprocess', 'CLIP_MEAN', 'CLIP_STD', 'RANDAUGMENTS']

logger = logging.getLogger(__name__)

CLIP_MEAN = tuple(OPENAI_DATASET_MEAN)
CLIP_STD = tuple(OPENAI_DATASET_STD)
Item = Tuple[str, int]


_INTERPOLATIONS = ('bicubic', 'bilinear')
_RESIZE_MODES = ('shortest', 'longest', 'squash')


def resolve_preprocess(preprocess: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Image preprocessing settings with OpenAI CLIP's as defaults, validated.

    Args:
        preprocess: open_clip preprocess settings (``model.visual.preprocess_cfg`` or
            ``open_clip.get_pretrained_cfg(name, tag)``; other keys are ignored): ``mean``,
            ``std`` (3 values or one), ``interpolation`` (``'bicubic'`` / ``'bilinear'``),
            ``resize_mode`` (``'shortest'``, ``'longest'``, ``'squash'``), ``fill_color``.

    Returns:
        A dict with exactly those five keys.
    """
    cfg = dict(preprocess or {})
    out: Dict[str, Any] = {}
    for key, default in (('mean', CLIP_MEAN), ('std', CLIP_STD)):
        value = default if cfg.get(key) is None else cfg[key]
        value = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else \
            (float(value),) * 3
        if len(value) != 3 or (key == 'std' and min(value) <= 0):
            raise ValueError(f'preprocess {key} must be 3 values (std > 0), got {cfg.get(key)!r}')
        out[key] = value
    out['interpolation'] = cfg.get('interpolation') or 'bicubic'
    if out['interpolation'] not in _INTERPOLATIONS:
        raise ValueError(f'preprocess interpolation must be one of {_INTERPOLATIONS}, got '
                         f'{out["interpolation"]!r}')
    out['resize_mode'] = cfg.get('resize_mode') or 'shortest'
    if out['resize_mode'] not in _RESIZE_MODES:
        raise ValueError(f'preprocess resize_mode must be one of {_RESIZE_MODES}, got '
                         f'{out["resize_mode"]!r}')
    out['fill_color'] = int(cfg.get('fill_color') or 0)
    return out


RANDAUGMENTS = ('dassl', 'torchvision')


def build_transform(train: bool, image_size: int = 224, rand_augment: int = 2,
                    magnitude: int = 9,
                    preprocess: Optional[Mapping[str, Any]] = None,
                    randaugment: str = 'dassl', randaugment_p: float = 0.6) -> Callable:
    """CLIP preprocessing; for training RandomResizedCrop + flip + RandAugment(n), as POMP.

    Args:
        train: Training augmentation, else the deterministic evaluation transform.
        image_size: Output side length.
        rand_augment: Number of RandAugment ops (0: none).
        magnitude: Magnitude of ``randaugment='torchvision'`` (0-30).
        randaugment: ``'dassl'`` (default): the official POMP augmentation, Dassl's
            ``RandAugment2`` (:class:`~pomp_mm.pretrain.randaugment.DasslRandAugment`: each op
            applied with probability ``randaugment_p`` at a random magnitude);
            ``'torchvision'``: ``torchvision.transforms.RandAugment(rand_augment, magnitude)``.
        randaugment_p: Per-op probability of ``'dassl'``.
        preprocess: The CLIP model's preprocess settings (see :func:`resolve_preprocess`):
            normalisation, interpolation and, for evaluation, the resize mode (``'shortest'``:
            resize + centre crop; ``'squash'``: resize to a square; ``'longest'``: resize + pad).
            ``None``: OpenAI CLIP's (bicubic, shortest side).
    """
    from torchvision import transforms as T
    if randaugment not in RANDAUGMENTS:
        raise ValueError(f'randaugment must be one of {RANDAUGMENTS}, got {randaugment!r}')
    cfg = resolve_preprocess(preprocess)
    normalize = T.Normalize(cfg['mean'], cfg['std'])
    interpolation = T.InterpolationMode(cfg['interpolation'])
    if not train:  # exactly open_clip's evaluation transform for these settings
        from open_clip.transform import image_transform
        return image_transform(image_size, is_train=False, **cfg)
    ops = [T.RandomResizedCrop(image_size, scale=(0.08, 1.0), interpolation=interpolation),
           T.RandomHorizontalFlip()]
    if rand_augment and randaugment == 'dassl':
        ops.append(DasslRandAugment(rand_augment, randaugment_p))
    elif rand_augment:
        ops.append(T.RandAugment(num_ops=rand_augment, magnitude=magnitude))
    return T.Compose(ops + [T.ToTensor(), normalize])


def few_shot_split(items: Sequence[Item], shots: int, seed: int) -> List[Item]:
    """At most ``shots`` items per label, drawn with a seeded RNG (order: by label, then path)."""
    by_label: Dict[int, List[str]] = {}
    for path, label in items:
        by_label.setdefault(label, []).append(path)
    rng = random.Random(seed)
    out: List[Item] = []
    for label in sorted(by_label):
        paths = sorted(by_label[label])
        chosen = paths if len(paths) <= shots else rng.sample(paths, shots)
        out.extend((p, label) for p in sorted(chosen))
    return out


def _load_or_make_split(split_file: Optional[str], make: Callable[[], List[Item]],
                        expect: dict) -> List[Item]:
    """Reuse a split file written by an earlier run with the same settings, else write one."""
    if split_file and os.path.isfile(split_file):
        with open(split_file, encoding='utf-8') as f:
            data = json.load(f)
        if data.get('settings') != expect:
            raise ValueError(f'split file {split_file!r} was made with {data.get("settings")}, '
                             f'not {expect}; delete it or point split_file elsewhere')
        return [(p, int(label)) for p, label in data['items']]
    items = make()
    if split_file:
        payload = json.dumps({'settings': expect, 'items': items}).encode()
        atomic_write(split_file, lambda f: f.write(payload))
        logger.info('wrote split file %s (%d images)', split_file, len(items))
    return items


def _class_resolver(vocab: Vocabulary, source: str) -> Callable[[str, str], int]:
    """``(class spec, where) -> label``: a class id first (ids are unique), then a display name
    that only one class has (folder spellings with ``_`` too), then an index.

    ImageNet-21K has 1,444 names shared by 3,186 classes: a shared name cannot say which class
    is meant, so it is an error listing the candidates' ids, never the first class silently.
    """
    by_id = {i: k for k, i in enumerate(vocab.ids)}
    by_name: Dict[str, List[int]] = {}
    for k, name in enumerate(vocab.names):
        by_name.setdefault(name, []).append(k)

    def resolve(spec: str, where: str) -> int:
        if spec in by_id:
            return by_id[spec]
        for name in (spec, spec.replace('_', ' ')):
            found = by_name.get(name)
            if found and len(found) == 1:
                return found[0]
            if found:
                ids = ', '.join(repr(vocab.ids[k]) for k in found[:10])
                raise ValueError(f'{where} names {name!r}, which {len(found)} classes of '
                                 f'vocabulary {vocab.source!r} share (ids {ids}); name it by id')
        if spec.isdigit():
            if int(spec) < len(vocab):
                return int(spec)
            raise ValueError(f'{where} is a class index outside [0, {len(vocab)}) of the '
                             f'vocabulary {vocab.source!r} (read from {source!r})')
        raise ValueError(f'{where} is not in the vocabulary {vocab.source!r} (read from '
                         f'{source!r})')
    return resolve


class _ViewsDataset(Dataset):
    """Common part: items, a transform applied ``num_views`` times, skip-and-count on errors."""

    def __init__(self, items: List[Item], vocabulary: Vocabulary, transform: Callable,
                 num_views: int = 1):
        if num_views < 1:
            raise ValueError(f'num_views must be >= 1, got {num_views}')
        self.items = items
        self.vocabulary = vocabulary
        self.transform = transform
        self.num_views = num_views
        self.metainfo = {'classes': vocabulary.names, 'ids': vocabulary.ids}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def class_counts(self) -> List[int]:
        counts = [0] * len(self.vocabulary)
        for _, label in self.items:
            counts[label] += 1
        return counts

    def __getitem__(self, index: int) -> Optional[dict]:
        from PIL import Image, UnidentifiedImageError
        path, label = self.items[index]
        try:
            with Image.open(path) as img:
                img = img.convert('RGB')
        except (OSError, UnidentifiedImageError, ValueError) as err:
            logger.warning('skipping unreadable image %s: %s', path, err)
            return None
        views = torch.stack([self.transform(img) for _ in range(self.num_views)])
        return {'inputs': views, 'label': label, 'index': index}


@FUNCTIONS.register_module()
def collate_views(batch: List[Optional[dict]]) -> dict:
    """Stack samples ``[B, V, 3, H, W]``, dropping unreadable ones and counting them."""
    good = [b for b in batch if b is not None]
    out = {'skipped': len(batch) - len(good)}
    if good:
        out['inputs'] = torch.stack([b['inputs'] for b in good])
        out['labels'] = torch.tensor([b['label'] for b in good], dtype=torch.long)
        out['indices'] = torch.tensor([b['index'] for b in good], dtype=torch.long)
    return out


@DATASETS.register_module()
class ImageNet21K(_ViewsDataset):
    """ImageNet-21K with one folder per wnid.

    Args:
        data_root: For ``layout='fall11'``, the folder holding ``<wnid>/`` folders; for
            ``'winter21'`` (ImageNet-21K-P), the folder holding ``imagenet21k_train/`` and
            ``imagenet21k_val/``.
        layout: ``'fall11'`` or ``'winter21'``.
        split: ``'train'`` or ``'val'`` (winter21 only has a val folder; for fall11, ``'val'``
            takes images not in the training split).
        vocabulary: Label space, by default ``imagenet21k`` for fall11 and ``imagenet21k-p``
            for winter21. Folders whose wnid is not in it are skipped (logged).
        shots: Images per class for few-shot training (None: all).
        seed: Seed of the few-shot draw.
        split_file: JSON file the split is written to once and reused from.
        num_views: Augmented views per image.
        transform: Image transform; default :func:`build_transform`.
        image_size: Side length of the default transform.
        preprocess: The CLIP model's preprocess settings for the default transform (mean, std,
            interpolation, resize mode; see :func:`resolve_preprocess`). ``None``: OpenAI
            CLIP's, right for the OpenAI ViT-B-16 of the POMP configs; other models (e.g.
            ``ViT-B-16-SigLIP``: mean = std = 0.5) need theirs, e.g.
            ``open_clip.get_pretrained_cfg(name, tag)``.
        randaugment: Training RandAugment of the default transform: ``'dassl'`` (official
            POMP, Dassl's RandAugment2(2, p=0.6)) or ``'torchvision'`` (RandAugment(2, 9)).
    """

    def __init__(self, data_root: str, layout: str = 'fall11', split: str = 'train',
                 vocabulary: Optional[str] = None, shots: Optional[int] = 16, seed: int = 1,
                 split_file: Optional[str] = None, num_views: int = 1,
                 transform: Optional[Callable] = None, image_size: int = 224,
                 preprocess: Optional[Mapping[str, Any]] = None, randaugment: str = 'dassl'):
        if layout not in ('fall11', 'winter21'):
            raise ValueError(f"layout must be 'fall11' or 'winter21', got {layout!r}")
        if split not in ('train', 'val'):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not os.path.isdir(data_root):
            raise FileNotFoundError(f'ImageNet-21K root not found: {data_root!r}')
        vocab = load_vocabulary(vocabulary or ('imagenet21k' if layout == 'fall11'
                                               else 'imagenet21k-p'))
        self.data_root, self.layout, self.split = data_root, layout, split
        folder = data_root
        if layout == 'winter21':
            folder = os.path.join(data_root, f'imagenet21k_{split}')
            if not os.path.isdir(folder):
                raise FileNotFoundError(f'winter21 layout needs {folder!r}')
        settings = {'layout': layout, 'split': split, 'vocabulary': vocab.source,
                    'shots': shots, 'seed': seed}
        items = _load_or_make_split(split_file, lambda: self._scan(folder, vocab, shots, seed),
                                    settings)
        self.preprocess = None if transform else resolve_preprocess(preprocess)
        transform = transform or build_transform(split == 'train', image_size,
                                                 preprocess=preprocess, randaugment=randaugment)
        super().__init__(items, vocab, transform, num_views)

    def _scan(self, folder: str, vocab: Vocabulary, shots: Optional[int],
              seed: int) -> List[Item]:
        items, unknown = labelled_images(folder, {wnid: i for i, wnid in enumerate(vocab.ids)})
        if unknown:
            logger.warning('%d folders are not %s classes and are skipped, e.g. %s',
                           len(unknown), vocab.source, unknown[:3])
        if not items:
            raise ValueError(f'no images found under {folder!r}')
        if self.split == 'val' and self.layout == 'winter21':
            return items  # its own val folder: evaluate on all of it
        if shots is None:
            if self.split == 'val':
                raise ValueError('fall11 has no val folder: a held-out split needs shots')
            return items
        train = few_shot_split(items, shots, seed)
        if self.split == 'val':  # fall11: the images the few-shot draw did not take
            chosen = set(p for p, _ in train)
            return [it for it in items if it[0] not in chosen]
        return train


@DATASETS.register_module()
class ImageList(_ViewsDataset):
    """Custom pre-training images: a CSV (``path,class`` rows; class is a name or an index into
    the vocabulary; relative paths are relative to the CSV) or a folder with one sub-folder per
    class (folder names are the class names, sorted).

    Args:
        source: CSV file or folder.
        vocabulary: Label space; for a folder, defaults to its sub-folder names.
        shots, seed, split_file, num_views, transform, image_size, preprocess, randaugment: As
            for :class:`ImageNet21K`.
        train: Training augmentation (else the evaluation transform) for the default transform.
    """

    def __init__(self, source: str, vocabulary=None, shots: Optional[int] = None, seed: int = 1,
                 split_file: Optional[str] = None, num_views: int = 1,
                 transform: Optional[Callable] = None, image_size: int = 224,
                 train: bool = True, preprocess: Optional[Mapping[str, Any]] = None,
                 randaugment: str = 'dassl'):
        if os.path.isdir(source):
            classes = list_class_folders(source)
            vocab = parse_vocabulary(vocabulary) if vocabulary is not None else \
                Vocabulary(tuple(c.replace('_', ' ') for c in classes), tuple(classes), source)
            resolve = _class_resolver(vocab, source)
            items: List[Item] = []
            for c in classes:
                label = resolve(c, f'folder {c!r}')
                sub = os.path.join(source, c)
                items.extend((os.path.join(sub, f), label) for f in list_images(sub))
        elif os.path.isfile(source):
            if vocabulary is None:
                raise ValueError(f'a CSV image list ({source!r}) needs a vocabulary')
            vocab = parse_vocabulary(vocabulary)
            items = self._read_csv(source, vocab)
        else:
            raise FileNotFoundError(f'image list not found: {source!r}')
        if not items:
            raise ValueError(f'no images found in {source!r}')
        settings = {'source': os.path.abspath(source), 'shots': shots, 'seed': seed}
        items = _load_or_make_split(
            split_file, lambda: few_shot_split(items, shots, seed) if shots else items, settings)
        self.preprocess = None if transform else resolve_preprocess(preprocess)
        super().__init__(items, vocab,
                         transform or build_transform(train, image_size, preprocess=preprocess,
                                                      randaugment=randaugment),
                         num_views)

    @staticmethod
    def _read_csv(path: str, vocab: Vocabulary) -> List[Item]:
        base = os.path.dirname(os.path.abspath(path))
        resolve = _class_resolver(vocab, path)
        items = []
        with open(path, newline='', encoding='utf-8') as f:
            for line_no, row in enumerate(csv.reader(f), 1):
                if not row or row[0].startswith('#') or (line_no == 1 and row[0] == 'path'):
                    continue
                if len(row) < 2:
                    raise ValueError(f'{path}:{line_no}: expected "path,class", got {row}')
                img, cls = row[0].strip(), row[1].strip()
                label = resolve(cls, f'{path}:{line_no}: class {cls!r}')
                items.append((img if os.path.isabs(img) else os.path.join(base, img), label))
        return items
