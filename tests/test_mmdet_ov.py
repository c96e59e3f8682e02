"""Open-vocabulary detection: the zero-shot head, its losses and data, and the tools, on a tiny
Faster / Mask R-CNN with pomp_mm's tiny random CLIP and generated COCO / LVIS files.

The end-to-end tests inherit configs/mmdet/*.py and swap in the tiny detector and 64x64 images.
"""
import copy
import glob
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import pomp_mm  # noqa: E402
from pomp_mm.clip import TINY_CLIP  # noqa: E402
from pomp_mm.mmdet.tiny import tiny_detector  # noqa: E402

from helpers import write_coco_json, write_detection_images, write_lvis_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO_CONFIG = os.path.join(ROOT, 'configs', 'mmdet', 'pomp_faster-rcnn_r50_fpn_ov-coco.py')
LVIS_CONFIG = os.path.join(ROOT, 'configs', 'mmdet', 'pomp_mask-rcnn_r50_fpn_lvis-base.py')


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_model_override(prompt, with_mask=False):
    """Tiny detector + tiny CLIP text encoder with a saved prompt (no download, no cache)."""
    text = dict(_delete_=True, type='PompTextEncoder', clip_model=copy.deepcopy(TINY_CLIP),
                pretrained=None, prompt=prompt,
                cache_dir=None)
    # score_thr 0: an untrained detector's scores are low, and the metrics need detections
    return _merge(tiny_detector(with_mask),
                  dict(roi_head=dict(bbox_head=dict(classifier=dict(text_encoder=text))),
                       test_cfg=dict(rcnn=dict(score_thr=0.0))))


PIPELINES = """
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask={mask}),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask={mask}),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
max_iters = 3
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
default_hooks = dict(checkpoint=dict(interval=max_iters, by_epoch=False, save_best=None),
                     logger=dict(interval=1))
log_processor = dict(by_epoch=False)
optim_wrapper = dict(optimizer=dict(lr=0.002))
"""

COCO_TINY = """
_base_ = [{base!r}]
data_root = {root!r}
model = {model!r}
""" + PIPELINES.format(mask=False) + """
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, ann_file='train.json',
                                     data_prefix=dict(img='images/'), pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, ann_file='val.json',
                                   data_prefix=dict(img='images/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + '/val.json')
test_evaluator = val_evaluator
"""

LVIS_TINY = """
_base_ = [{base!r}]
data_root = {root!r}
model = {model!r}
""" + PIPELINES.format(mask=True) + """
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(dataset=dict(data_root=data_root, ann_file='train.json',
                                                  pipeline=train_pipeline)))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, ann_file='val.json',
                                   pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + '/val.json')
test_evaluator = val_evaluator
"""


def _ov_coco_classes():
    cfg = Config.fromfile(COCO_CONFIG)
    return list(cfg.base_classes), list(cfg.novel_classes), list(cfg.all_classes)


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    """Tiny OV-COCO: 6 images; train boxes of base classes plus a novel 'cat' and a non-OV
    'hair drier' (both must be dropped); val boxes of base and novel classes."""
    root = str(tmp_path_factory.mktemp('ovcoco'))
    base, novel, all_classes = _ov_coco_classes()
    names = write_detection_images(os.path.join(root, 'images'), 6)
    cats = all_classes + ['hair drier']
    train = [[('person', [4, 4, 30, 40]), ('car', [36, 30, 24, 30])],
             [('person', [10, 8, 40, 50]), ('cat', [2, 2, 20, 20])],
             [('car', [8, 12, 44, 36]), ('hair drier', [30, 30, 20, 20])],
             [('bicycle', [6, 6, 50, 50])]]
    val = [[('person', [4, 4, 30, 40]), ('cat', [30, 30, 30, 30])],
           [('dog', [8, 8, 40, 40]), ('car', [36, 30, 24, 30])]]
    write_coco_json(os.path.join(root, 'train.json'), names[:4], cats, train)
    write_coco_json(os.path.join(root, 'val.json'), names[4:], cats, val)
    prompt = pomp_mm.save_prompt(os.path.join(root, 'prompt.pth'), torch.randn(4, 64) * 0.02,
                                 clip_model='tiny')
    config = os.path.join(root, 'tiny_ov_coco.py')
    with open(config, 'w') as f:
        f.write(COCO_TINY.format(base=COCO_CONFIG, root=root,
                                 model=tiny_model_override(prompt)))
    return SimpleNamespace(root=root, config=config, prompt=prompt, images=names,
                           cfg=Config.fromfile(config), base=base, novel=novel,
                           all_classes=all_classes)


def build_detector(cfg, **changes):
    """Build ``cfg.model`` after dotted-key ``changes``."""
    import pomp_mm.mmdet  # noqa: F401
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    model_cfg = copy.deepcopy(cfg.model)
    for key, value in changes.items():
        *path, last = key.split('.')
        node = model_cfg
        for part in path:
            node = node[part]
        node[last] = value
    torch.manual_seed(0)
    return MODELS.build(model_cfg)
