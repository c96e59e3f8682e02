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


def _lvis_classes():
    from mmdet.datasets import LVISV1Dataset
    return list(LVISV1Dataset.METAINFO['classes'])


@pytest.fixture(scope='module')
def lvis(tmp_path_factory):
    """Tiny LVIS v1: all 1,203 categories (frequencies f/c/r in turn), boxes on a few; train
    has a rare-class box that OV-LVIS must drop, val has a rare one for APr."""
    root = str(tmp_path_factory.mktemp('lvis'))
    classes = _lvis_classes()
    freq = {n: 'fcr'[i % 3] for i, n in enumerate(classes)}
    f1, f2, c1, r1 = classes[0], classes[3], classes[1], classes[2]
    assert (freq[f1], freq[f2], freq[c1], freq[r1]) == ('f', 'f', 'c', 'r')
    train_names = write_detection_images(os.path.join(root, 'train2017'), 4, seed=1)
    val_names = write_detection_images(os.path.join(root, 'val2017'), 2, seed=2)
    train = [[(f1, [4, 4, 30, 40]), (c1, [36, 30, 24, 30])],
             [(f2, [10, 8, 40, 50]), (r1, [2, 2, 20, 20])],
             [(c1, [8, 12, 44, 36])],
             [(f1, [6, 6, 50, 50])]]
    val = [[(f1, [4, 4, 30, 40]), (r1, [30, 30, 30, 30])],
           [(c1, [8, 8, 40, 40]), (f2, [36, 30, 24, 30])]]
    write_lvis_json(os.path.join(root, 'train.json'), 'train2017', train_names, classes, freq,
                    train)
    write_lvis_json(os.path.join(root, 'val.json'), 'val2017', val_names, classes, freq, val)
    prompt = pomp_mm.save_prompt(os.path.join(root, 'prompt.pth'), torch.randn(4, 64) * 0.02,
                                 clip_model='tiny')
    model = tiny_model_override(prompt, with_mask=True)
    model['roi_head']['bbox_head']['loss_cls'] = dict(class_frequencies=root + '/train.json')
    config = os.path.join(root, 'tiny_lvis.py')
    with open(config, 'w') as f:
        f.write(LVIS_TINY.format(base=LVIS_CONFIG, root=root, model=model))
    return SimpleNamespace(root=root, config=config, cfg=Config.fromfile(config),
                           classes=classes, freq=freq, rare=r1, train=train, val=val)


# ------------------------------------------------------------------------------- classifier
def _classifier(**kwargs):
    from pomp_mm.mmdet import ZeroShotClassifier
    kwargs.setdefault('in_features', 32)
    torch.manual_seed(0)
    return ZeroShotClassifier(**kwargs)


def _text_cfg(prompt):
    return dict(type='PompTextEncoder', clip_model=copy.deepcopy(TINY_CLIP), prompt=prompt)


def test_npy_and_text_encoder_give_the_same_logits(coco, tmp_path):
    """Embeddings exported from the head's own encoder, loaded back as a Detic-style .npy (no
    sidecar, float32; and float16 as Detic ships them), give the encoder path's logits."""
    base, all_classes = coco.base, coco.all_classes
    by_text = _classifier(out_features=len(base) + 1, text_encoder=_text_cfg(coco.prompt),
                          vocabulary=base, test_vocabulary=all_classes)
    with torch.no_grad():
        train_emb = by_text.text_encoder.encode_text(base).numpy()
        test_emb = by_text.text_encoder.encode_text(all_classes).numpy()
    np.save(tmp_path / 'train.npy', train_emb)
    np.save(tmp_path / 'test.npy', test_emb)
    by_npy = _classifier(out_features=len(base) + 1, embeddings=str(tmp_path / 'train.npy'),
                         test_embeddings=str(tmp_path / 'test.npy'))
    by_npy.load_state_dict(by_text.state_dict())
    x = torch.randn(7, 32)
    for mode, width in ((True, len(base) + 1), (False, len(all_classes) + 1)):
        by_text.train(mode)
        by_npy.train(mode)
        a, b = by_text(x), by_npy(x)
        assert a.shape == (7, width)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        assert torch.all(a[:, -1] == 0)  # Detic's constant background logit
    # cosine logits: bounded by the temperature
    assert a.abs().max() <= 50.0 + 1e-4
    np.save(tmp_path / 'half.npy', test_emb.astype(np.float16))
    by_npy.set_vocabulary(embeddings=str(tmp_path / 'half.npy'))
    torch.testing.assert_close(by_npy(x), a, rtol=0, atol=0.05)


def test_state_dict_holds_no_text_tower(coco):
    clf = _classifier(out_features=len(coco.base) + 1, text_encoder=_text_cfg(coco.prompt),
                      vocabulary=coco.base, embed_dim=32, bias_init=-4.6)
    assert set(clf.state_dict()) == {'proj.weight', 'proj.bias', 'bias'}
    assert clf._encoder is None  # built on first use only
    clf.train()
    out = clf(torch.randn(2, 32))
    assert out.shape == (2, len(coco.base) + 1)
    torch.testing.assert_close(out[:, -1], torch.full((2,), -4.6))


@pytest.mark.parametrize('kwargs,match', [
    (dict(embeddings='ten_rows', vocabulary='BASE'), r'has 10 rows but the vocabulary has 48'),
    (dict(embeddings='ten_rows'), r'10 classes but the bbox head has num_classes=48'),
    (dict(embeddings='train', embed_dim=16), r'width 32 but the projection has embed_dim=16'),
    (dict(embeddings='train', test_vocabulary=' . '), r"test vocabulary ' \. ' is empty"),
    (dict(embeddings='train', test_vocabulary=[]), r'is empty'),
    (dict(embeddings='train', test_vocabulary=['mug']), r'needs a text_encoder'),
    (dict(), r'needs a text_encoder config or an embeddings'),
])
def test_classifier_errors(coco, tmp_path, kwargs, match):
    np.save(tmp_path / 'ten_rows.npy', np.random.randn(10, 32).astype(np.float32))
    np.save(tmp_path / 'train.npy', np.random.randn(48, 32).astype(np.float32))
    for key in ('embeddings',):
        if key in kwargs:
            kwargs[key] = str(tmp_path / f'{kwargs[key]}.npy')
    if kwargs.get('vocabulary') == 'BASE':
        kwargs['vocabulary'] = coco.base
    with pytest.raises(ValueError, match=match):
        _classifier(out_features=49, **kwargs)


def test_bbox_head_errors(coco):
    with pytest.raises(ValueError, match='reg_class_agnostic=True'):
        build_detector(coco.cfg, **{'roi_head.bbox_head.reg_class_agnostic': False})
    with pytest.raises(ValueError, match='48 classes but the bbox head has num_classes=80'):
        build_detector(coco.cfg, **{'roi_head.bbox_head.num_classes': 80})


def test_vocabulary_switch_at_test_time(coco):
    from mmdet.apis import inference_detector

    from pomp_mm.mmdet import set_detector_vocabulary
    model = build_detector(coco.cfg)
    model.cfg = coco.cfg
    head = model.roi_head.bbox_head
    assert head.num_classes == 48  # train mode: the base classes
    model.eval()
    assert head.num_classes == 65 and head.fc_cls.class_names == coco.all_classes
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image = os.path.join(coco.root, 'images', coco.images[0])
    names = set_detector_vocabulary(model, 'mug . webcam . headphone')
    assert names == ['mug', 'webcam', 'headphone'] and head.num_classes == 3
    pred = inference_detector(model, image).pred_instances
    assert len(pred) > 0 and int(pred.labels.max()) < 3
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no retraining
    model.train()
    assert head.num_classes == 48
    with pytest.raises(ValueError, match='is empty'):
        set_detector_vocabulary(model, '')
