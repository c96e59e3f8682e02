"""Scene sets on disk: what mmseg's and mmdet's own dataset classes read back is what was drawn."""
import json
import os

import numpy as np
import pytest

from pomp_mm.synthetic import protocol
from pomp_mm.synthetic.scenes import read_split, scene_at, write_scene_set

SEED, COUNT = 5, 12
NAMES = [c.name for c in protocol.scene_classes()]


@pytest.fixture(scope='module')
def scene_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('scenes'))
    write_scene_set(root, 'train', COUNT, SEED, progress=False)
    return root


def test_scene_classes_and_split_are_fixed():
    classes = protocol.scene_classes()
    assert len(classes) == 20 and len({c.shape for c in classes}) == 20
    assert len({c.colour for c in classes}) == 20  # one colour per class
    assert classes[3].name == 'lavender star'  # pinned: the protocol seed decides
    unseen = protocol.scene_unseen_ids()
    assert len(unseen) == 5 and [NAMES[i] for i in unseen] == [
        'lavender star', 'lime rectangle', 'maroon octagon', 'pink kite', 'olive parallelogram']


def test_mmseg_reads_the_drawn_label_maps(scene_root):
    from mmseg.datasets import BaseSegDataset
    from mmseg.registry import TRANSFORMS
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    ds = BaseSegDataset(
        data_root=scene_root, ann_file='splits/train.txt', img_suffix='.png',
        seg_map_suffix='.png', reduce_zero_label=True, metainfo=dict(classes=NAMES),
        data_prefix=dict(img_path='images/train', seg_map_path='labels/train'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')])
    assert len(ds) == COUNT == len(read_split(scene_root, 'train'))
    assert TRANSFORMS.get('LoadAnnotations') is not None
    for i in (0, 7):
        got = ds[i]
        scene, ids = scene_at(SEED, i)
        want = np.full(scene.labels.shape, 255, dtype=np.uint8)
        for j, k in enumerate(ids):
            want[scene.labels == j + 1] = k
        np.testing.assert_array_equal(got['gt_seg_map'], want)
        np.testing.assert_array_equal(got['img'][..., ::-1], scene.image)  # BGR


def test_mmdet_reads_the_drawn_boxes_and_masks(scene_root):
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    ds = CocoDataset(
        data_root=scene_root, ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/train/'), metainfo=dict(classes=tuple(NAMES)),
        test_mode=True,
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
    assert len(ds) == COUNT
    seen = 0
    for i in range(COUNT):
        got = ds[i]
        scene, ids = scene_at(SEED, i)
        visible = [j for j in range(len(ids)) if scene.areas[j] > 0]
        np.testing.assert_array_equal(got['gt_bboxes_labels'], [ids[j] for j in visible])
        np.testing.assert_allclose(got['gt_bboxes'].numpy(), scene.boxes[visible])
        masks = got['gt_masks'].to_ndarray()
        for m, j in zip(masks, visible):
            np.testing.assert_array_equal(m, scene.labels == j + 1)
        seen += len(visible)
    with open(os.path.join(scene_root, 'annotations', 'instances_train.json')) as f:
        coco = json.load(f)
    assert seen == len(coco['annotations']) > COUNT
    assert [c['name'] for c in coco['categories']] == NAMES


def test_hidden_objects_get_no_annotation(tmp_path):
    """A scene whose later object covers an earlier one entirely: no box, no mask for it."""
    for index in range(400):
        scene, ids = scene_at(SEED, index, max_objects=8)
        if (scene.areas == 0).any():
            break
    else:
        pytest.skip('no fully hidden object in 400 scenes')
    from pomp_mm.synthetic.scenes import _coco_annotations
    anns = _coco_annotations(scene, ids, 1, 1)
    assert len(anns) == int((scene.areas > 0).sum()) < len(ids)


def test_rewriting_keeps_images_and_is_deterministic(scene_root, tmp_path):
    write_scene_set(str(tmp_path), 'train', 3, SEED, progress=False)
    for sub in ('images', 'labels'):
        for name in ('000000.png', '000002.png'):
            a = open(os.path.join(scene_root, sub, 'train', name), 'rb').read()
            b = open(os.path.join(tmp_path, sub, 'train', name), 'rb').read()
            assert a == b


@pytest.mark.parametrize('kwargs,match', [
    (dict(split='../x'), "split must be a plain name like \"train\", got '../x'"),
    (dict(count=0), 'count must be an integer in 1..1000000, got 0'),
    (dict(class_ids=[3, 20]), r'class_ids must be ids in 0..19, got 20'),
    (dict(class_ids=[]), r"class_ids must be ids in 0..19, got 'none'"),
    (dict(max_objects=0), 'max_objects must be in 1..16, got 0'),
])
def test_bad_requests_name_the_value(tmp_path, kwargs, match):
    args = dict(root=str(tmp_path), split='train', count=2, seed=1, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        write_scene_set(**args)


def test_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no split 'val' under"):
        read_split(str(tmp_path), 'val')
