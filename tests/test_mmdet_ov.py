"""Open-vocabulary detection: the zero-shot head, its losses and data, and the tools, on a tiny
Faster / Mask R-CNN with pomp_mm's tiny random CLIP and generated COCO / LVIS files.

The end-to-end tests inherit configs/mmdet/*.py and swap in the tiny detector and 64x64 images.
"""
import copy
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import pomp_mm  # noqa: E402
from pomp_mm.clip import clip_config  # noqa: E402
from pomp_mm.testing import tiny_detector  # noqa: E402

from helpers import (load_tool, run_repo_tool, tool_path, write_coco_json, write_detection_images,  # noqa: E402
                     write_lvis_json)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO_CONFIG = os.path.join(ROOT, 'configs', 'mmdet', 'pomp_faster-rcnn_r50_fpn_ov-coco.py')
LVIS_CONFIG = os.path.join(ROOT, 'configs', 'mmdet', 'pomp_mask-rcnn_r50_fpn_lvis-base.py')


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_tiny_weights(root):
    """A prompt and tiny CLIP weights saved as files, so every build embeds alike."""
    from pomp_mm.clip import build_clip
    prompt = pomp_mm.save_prompt(os.path.join(root, 'prompt.pth'), torch.randn(4, 64) * 0.02,
                                 clip_model='tiny')
    torch.manual_seed(0)
    clip = os.path.join(root, 'clip.pt')
    torch.save(build_clip('tiny').state_dict(), clip)
    return prompt, clip


def tiny_model_override(root, with_mask=False):
    """Tiny detector + tiny CLIP text encoder from saved weights (no download, no cache)."""
    prompt, clip = write_tiny_weights(root)
    text = dict(_delete_=True, type='PompTextEncoder', clip_model='tiny',
                pretrained=clip, prompt=prompt, cache_dir=None)
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
    model = tiny_model_override(root)
    config = os.path.join(root, 'tiny_ov_coco.py')
    with open(config, 'w') as f:
        f.write(COCO_TINY.format(base=COCO_CONFIG, root=root, model=model))
    prompt = model['roi_head']['bbox_head']['classifier']['text_encoder']['prompt']
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
    model = tiny_model_override(root, with_mask=True)
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
    return dict(type='PompTextEncoder', clip_model='tiny', prompt=prompt)


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
    # temperature x cosine of the projected features and the class rows (a numpy reference)
    z = x.numpy() @ by_npy.proj.weight.detach().numpy().T + by_npy.proj.bias.detach().numpy()
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    rows = test_emb / np.linalg.norm(test_emb, axis=1, keepdims=True)
    np.testing.assert_allclose(a[:, :-1].detach().numpy(), 50.0 * z @ rows.T, atol=1e-4, rtol=0)
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


def test_init_weights_keeps_the_sigmoid_prior(lvis):
    """The Runner's ``model.init_weights()`` runs BBoxHead's default Normal init on ``fc_cls``,
    which zeroes any ``bias`` it finds; the classifier must come out with its prior."""
    model = build_detector(lvis.cfg)
    clf = model.roi_head.bbox_head.fc_cls
    assert any(c.get('override', {}).get('name') == 'fc_cls'
               for c in model.roi_head.bbox_head.init_cfg)
    with torch.no_grad():
        clf.bias.fill_(3.0)
        clf.proj.weight.zero_()
    model.init_weights()
    assert clf.bias.item() == pytest.approx(-4.6)
    bound = 1 / clf.proj.in_features ** 0.5  # nn.Linear's own init, as Detic
    assert 0 < clf.proj.weight.abs().max() <= bound
    model.eval()
    out = clf(torch.randn(3, clf.proj.in_features))
    torch.testing.assert_close(out[:, -1], torch.full((3,), -4.6))


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
    with torch.no_grad():  # the logits use exactly the new names' embeddings
        want = head.fc_cls.text_encoder.encode_text(['mug', 'webcam', 'headphone'])
    torch.testing.assert_close(head.fc_cls.class_weight()[:-1], want, atol=1e-6, rtol=0)
    pred = inference_detector(model, image).pred_instances
    assert len(pred) > 0 and int(pred.labels.max()) < 3
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no retraining
    model.train()
    assert head.num_classes == 48
    with pytest.raises(ValueError, match='is empty'):
        set_detector_vocabulary(model, '')


def test_per_class_mask_head_is_refused(lvis):
    """Mask channels of a per-class mask head are train classes; test-vocabulary labels would
    index them (wrong mask or IndexError), so the hook and the vocabulary switch refuse it."""
    from pomp_mm.mmdet import DetVocabularyCheckHook, set_detector_vocabulary
    hook = DetVocabularyCheckHook()
    hook.before_run(SimpleNamespace(model=build_detector(lvis.cfg)))  # class-agnostic: fine
    model = build_detector(lvis.cfg, **{'roi_head.mask_head.class_agnostic': False})
    match = r'roi_head.mask_head \(FCNMaskHead\) has class_agnostic=False'
    with pytest.raises(ValueError, match=match):
        hook.before_run(SimpleNamespace(model=model))
    loader = SimpleNamespace(dataset=SimpleNamespace(metainfo=dict(classes=lvis.classes)))
    with pytest.raises(ValueError, match=match):
        hook.before_test(SimpleNamespace(model=model, test_loop=SimpleNamespace(dataloader=loader)))
    with pytest.raises(ValueError, match=match):
        set_detector_vocabulary(model, ['mug', 'webcam'])


class _AmpSensitiveEncoder:
    """Stands in for a text encoder that computes at whatever autocast precision is active."""

    def __init__(self, num_classes, width=32):
        gen = torch.Generator().manual_seed(0)
        self.tower = SimpleNamespace(token_embedding=torch.nn.Embedding(1, width))
        self.feats = torch.randn(num_classes, width, generator=gen)
        self.proj = torch.randn(width, width, generator=gen)

    def encode_text(self, vocabulary):
        return torch.nn.functional.normalize(
            torch.nn.functional.linear(self.feats, self.proj), dim=-1)


def test_class_table_is_float32_under_autocast(coco):
    """The first forward may run under AMP; the class table it computes is kept for the run
    (and cached on disk), so it must be the float32 one."""
    saved_weights = coco.cfg.model.roi_head.bbox_head.classifier.text_encoder.to_dict()

    def build():
        return _classifier(out_features=len(coco.base) + 1, vocabulary=coco.base,
                           text_encoder=copy.deepcopy(saved_weights), embed_dim=32)

    x = torch.randn(3, 32)
    ref, amp = build(), build()
    ref(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        amp(x)
    assert amp.train_source.table.dtype == torch.float32
    torch.testing.assert_close(amp.train_source.table, ref.train_source.table, rtol=0, atol=0)
    # the classifier's own guard, whatever the encoder does under autocast
    ref, amp = build(), build()
    for clf in (ref, amp):
        clf.__dict__['_encoder'] = _AmpSensitiveEncoder(len(coco.base))
    ref(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        amp(x)
    torch.testing.assert_close(amp.train_source.table, ref.train_source.table, rtol=0, atol=0)


def test_detector_build_loads_no_text_encoder(coco, monkeypatch):
    """mmdet builds the classifier twice per bbox head; the projection width comes from the
    CLIP config, so no text encoder (no CLIP weights) is built until embeddings are needed."""
    built = []
    init = pomp_mm.PompTextEncoder.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(pomp_mm.PompTextEncoder, '__init__', counting_init)
    model = build_detector(coco.cfg)
    clf = model.roi_head.bbox_head.fc_cls
    assert built == [] and clf._encoder is None
    assert clf.embed_dim == clip_config('tiny')['embed_dim'] and clf.proj.out_features == 32
    model.eval()
    assert clf.class_weight().shape == (len(coco.all_classes) + 1, 32) and built == [1]
    # a named open_clip model: its width without its (here missing) weights
    named = _classifier(out_features=len(coco.base) + 1, vocabulary=coco.base,
                        text_encoder=dict(type='PompTextEncoder', clip_model='ViT-B-16',
                                          pretrained='/nonexistent/clip.pt'))
    assert named.embed_dim == 512 and named._encoder is None and built == [1]


def test_deep_copies_share_the_text_encoder(coco):
    """mmengine's EMA model is a deepcopy of the detector: the frozen text tower is shared,
    the trained weights are copied."""
    clf = _classifier(out_features=len(coco.base) + 1, vocabulary=coco.base,
                      text_encoder=_text_cfg(coco.prompt))
    x = torch.randn(2, 32)
    out = clf(x)
    twin = copy.deepcopy(clf)
    assert twin.text_encoder is clf.text_encoder
    assert twin.proj.weight is not clf.proj.weight
    torch.testing.assert_close(twin(x), out)
    with torch.no_grad():
        twin.proj.weight.zero_()
    assert clf.proj.weight.abs().sum() > 0


# ------------------------------------------------------------------------------- loss
def _fed(**kwargs):
    from pomp_mm.mmdet import FederatedSigmoidLoss
    return FederatedSigmoidLoss(**kwargs)


def test_federated_loss_without_sampling_is_sigmoid_cross_entropy():
    torch.manual_seed(0)
    scores = torch.randn(6, 5 + 1)
    labels = torch.tensor([0, 3, 5, 5, 2, 3])  # 5 = background
    target = torch.zeros(6, 5)
    target[[0, 1, 4, 5], [0, 3, 2, 3]] = 1
    ref = torch.nn.functional.binary_cross_entropy_with_logits(scores[:, :5], target,
                                                               reduction='sum') / 6
    loss = _fed(num_sample_cats=None)(scores, labels, torch.ones(6), avg_factor=6)
    torch.testing.assert_close(loss, ref)


def test_federated_loss_samples_present_classes_and_weighted_negatives(tmp_path):
    from pomp_mm.mmdet import lvis_class_frequencies
    names = [f'c{i}' for i in range(12)]
    freq = {n: 'r' if i < 4 else 'f' for i, n in enumerate(names)}
    boxes = [[(n, [0, 0, 10, 10])] for n in names[4:]]  # every f class in one image
    ann = write_lvis_json(str(tmp_path / 'lvis.json'), 'train2017',
                          [f'{i}.jpg' for i in range(len(boxes))], names, freq, boxes)
    counts = lvis_class_frequencies(ann, exclude_frequencies=['r'])
    assert counts.tolist() == [0.0] * 4 + [1.0] * 8
    loss = _fed(num_sample_cats=5, class_frequencies=ann, exclude_frequencies=['r'])
    labels = torch.tensor([5, 12, 12, 7])  # classes 5 and 7 present; 12 = background
    for seed in range(20):
        torch.manual_seed(seed)
        mask = loss.sample_classes(labels, 12)
        chosen = set(mask.nonzero().flatten().tolist())
        assert {5, 7} <= chosen and len(chosen) == 5
        assert not chosen & {0, 1, 2, 3}  # rare classes are never negatives
    # rows and columns outside the sample get no loss
    scores = torch.randn(4, 13, requires_grad=True)
    torch.manual_seed(0)
    loss(scores, labels, torch.ones(4), avg_factor=4).backward()
    torch.manual_seed(0)
    mask = loss.sample_classes(labels, 12)
    assert torch.all(scores.grad[:, :12][:, mask == 0] == 0)
    assert torch.all(scores.grad[:, :12][:, mask == 1] != 0)
    assert torch.all(scores.grad[:, 12] == 0)  # background has no column of its own
    act = loss.get_activation(scores.detach())
    torch.testing.assert_close(act[:, :12], scores.detach()[:, :12].sigmoid())
    assert torch.all(act[:, 12] == 0)
    with pytest.raises(ValueError, match='has 12 entries but the head scores 7 classes'):
        _fed(class_frequencies=[1.0] * 12).sampling_weights(7, torch.device('cpu'))


def test_federated_negatives_follow_image_count_to_the_power():
    """Detic draws negatives by image_count ** 0.5: a class in 100 images is drawn 10x as
    often as one in 1 (and 100x with power 1)."""
    counts = [100.0] + [1.0] * 11
    for power, ratio in ((0.5, 10.0), (1.0, 100.0)):
        loss = _fed(num_sample_cats=2, class_frequencies=counts, power=power)
        weights = loss.sampling_weights(12, torch.device('cpu'))
        torch.testing.assert_close(weights, torch.tensor(counts) ** power)
        picks = torch.zeros(12)
        torch.manual_seed(0)
        for _ in range(3000):  # class 11 present, one negative drawn
            picks += loss.sample_classes(torch.tensor([11]), 12)
        rate_common = picks[0] / 3000
        rate_rare = picks[1:11].mean() / 3000
        assert float(rate_common / rate_rare) == pytest.approx(ratio, rel=0.35)


@pytest.mark.parametrize('num_sample_cats', [None, 50, 5])
def test_federated_loss_ignores_zero_frequency_classes(num_sample_cats):
    """Detic's ignore_zero_cats: classes of zero frequency (here rare classes 0-3, and 12
    though present) get no loss, with or without sampling; power 0 keeps them at zero."""
    freqs = [0.0] * 4 + [9.0] * 8 + [0.0]
    labels = torch.tensor([5, 13, 12, 7])  # 13 = background
    for power in (0.5, 0.0):
        loss = _fed(num_sample_cats=num_sample_cats, class_frequencies=freqs, power=power)
        torch.manual_seed(0)
        mask = loss.sample_classes(labels, 13)
        assert mask[[0, 1, 2, 3, 12]].tolist() == [0.0] * 5
        assert mask[5] == 1 and mask[7] == 1
        if num_sample_cats != 5:
            assert mask[4:12].tolist() == [1.0] * 8
        scores = torch.randn(4, 14, requires_grad=True)
        loss(scores, labels, torch.ones(4), avg_factor=4).backward()
        assert torch.all(scores.grad[:, [0, 1, 2, 3, 12]] == 0)


# ------------------------------------------------------------------------------- data
def test_open_vocab_coco_keeps_base_annotations_only(coco):
    import pomp_mm.mmdet  # noqa: F401
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    ds = DATASETS.build(dict(type='OpenVocabCocoDataset', data_root=coco.root,
                             ann_file='train.json', data_prefix=dict(img='images/'),
                             metainfo=dict(classes=coco.base), pipeline=[]))
    labels = [coco.base[i['bbox_label']] for k in range(len(ds))
              for i in ds.get_data_info(k)['instances']]
    assert sorted(labels) == sorted(['person', 'car', 'person', 'car', 'bicycle'])
    assert ds._dropped == 2  # the novel 'cat' and 'hair drier'


def test_open_vocab_lvis_drops_rare_annotations(lvis):
    import pomp_mm.mmdet  # noqa: F401
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    ds = DATASETS.build(dict(type='OpenVocabLVISV1Dataset', data_root=lvis.root,
                             ann_file='train.json', data_prefix=dict(img=''), pipeline=[]))
    labels = [lvis.classes[i['bbox_label']] for k in range(len(ds))
              for i in ds.get_data_info(k)['instances']]
    expected = [n for per_image in lvis.train for n, _ in per_image if lvis.freq[n] != 'r']
    assert sorted(labels) == sorted(expected) and lvis.rare not in labels
    assert len(ds.metainfo['classes']) == 1203  # the label space keeps every class
    with pytest.raises(ValueError, match="must hold 'r', 'c' or 'f'"):
        DATASETS.build(dict(type='OpenVocabLVISV1Dataset', data_root=lvis.root,
                            ann_file='train.json', exclude_frequencies=['rare']))


def _coco_dataset(coco, classes, dataset_type='OpenVocabCocoDataset'):
    import pomp_mm.mmdet  # noqa: F401
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    return DATASETS.build(dict(type=dataset_type, data_root=coco.root, ann_file='train.json',
                               data_prefix=dict(img='images/'), metainfo=dict(classes=classes),
                               pipeline=[]))


def test_dataset_classes_must_follow_the_file_order(coco, lvis):
    """mmdet labels by the annotation file's category order over the names it finds, whatever
    order metainfo['classes'] has: a reordered or misspelt list would shift labels silently."""
    import pomp_mm.mmdet  # noqa: F401
    from mmdet.registry import DATASETS

    from pomp_mm.mmdet import DetVocabularyCheckHook
    assert _coco_dataset(coco, coco.base).label_names == coco.base
    with pytest.raises(ValueError, match=r"differ at index 0: 'toothbrush' vs 'person'; list "
                       "the classes in the file's category order"):
        _coco_dataset(coco, list(reversed(coco.base)))
    misspelt = ['bike' if c == 'bicycle' else c for c in coco.base]
    with pytest.raises(ValueError, match=r"metainfo\['classes'\]\[1\] = 'bike' is not a "
                       'category of .*train.json'):
        _coco_dataset(coco, misspelt)
    swapped = list(lvis.classes)
    swapped[0], swapped[3] = swapped[3], swapped[0]
    with pytest.raises(ValueError, match=f'differ at index 0: {swapped[0]!r} vs '
                       f'{lvis.classes[0]!r}'):
        DATASETS.build(dict(type='OpenVocabLVISV1Dataset', data_root=lvis.root,
                            ann_file='train.json', data_prefix=dict(img=''), pipeline=[],
                            metainfo=dict(classes=swapped)))

    # the hook compares the head with the labels' names from the file ...
    model = build_detector(coco.cfg)
    hook = DetVocabularyCheckHook()

    def train_runner(dataset):
        return SimpleNamespace(model=model, train_dataloader=SimpleNamespace(dataset=dataset))

    hook.before_train(train_runner(_coco_dataset(coco, coco.base)))
    swapped = list(coco.base)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    recorded = SimpleNamespace(metainfo=dict(classes=tuple(coco.base)), label_names=swapped)
    with pytest.raises(ValueError, match="at index 0: 'bicycle' vs 'person'"):
        hook.before_train(train_runner(recorded))
    # ... and, for mmdet's own CocoDataset, counts the classes the file has
    plain = _coco_dataset(coco, misspelt, 'CocoDataset')
    with pytest.raises(ValueError, match=r'lists 48 classes but its annotation file .* has only '
                       '47 of them'):
        hook.before_train(train_runner(plain))


def test_ov_coco_metric_splits_base_and_novel(coco):
    """The config's OV-COCO evaluation with perfect base boxes and no novel ones: base AP50 1,
    novel AP50 0 (a swapped or wrong split in the config's metainfo fails this)."""
    from mmdet.registry import METRICS
    init_default_scope('mmdet')
    with open(os.path.join(coco.root, 'val.json')) as f:
        gt = json.load(f)
    meta = coco.cfg.val_dataloader.dataset.metainfo
    assert set(meta['novel_classes']) >= {'cat', 'dog'} and 'person' in meta['base_classes']
    metric = METRICS.build(dict(coco.cfg.val_evaluator))
    metric.dataset_meta = dict(meta)
    name_of = {c['id']: c['name'] for c in gt['categories']}
    for img in gt['images']:
        anns = [a for a in gt['annotations'] if a['image_id'] == img['id'] and
                name_of[a['category_id']] in meta['base_classes']]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)],
                             dtype=torch.float32)
        labels = [list(meta['classes']).index(name_of[a['category_id']]) for a in anns]
        metric.process({}, [dict(img_id=img['id'], ori_shape=(64, 64), pred_instances=dict(
            bboxes=boxes, scores=torch.ones(len(anns)), labels=torch.tensor(labels)))])
    results = metric.evaluate(len(gt['images']))
    assert results['coco/base_ap50'] == pytest.approx(1.0)
    assert results['coco/novel_ap50'] == pytest.approx(0.0)


def test_lvis_metric_runs_under_numpy_2(lvis):
    """mmdet's LVISMetric on the tiny LVIS val file: the ground truth as predictions scores
    AP 1 everywhere, including APr; without pomp_mm's shim LVISEval dies on np.float."""
    import lvis.eval as lvis_eval
    from mmdet.evaluation import LVISMetric

    import pomp_mm.mmdet  # noqa: F401
    with open(os.path.join(lvis.root, 'val.json')) as f:
        gt = json.load(f)
    label_of = {c['id']: i for i, c in enumerate(sorted(gt['categories'], key=lambda c: c['id']))}

    def run():
        metric = LVISMetric(ann_file=os.path.join(lvis.root, 'val.json'), metric='bbox')
        metric.dataset_meta = dict(classes=tuple(lvis.classes))
        for img in gt['images']:
            anns = [a for a in gt['annotations'] if a['image_id'] == img['id']]
            boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                                  (a['bbox'] for a in anns)], dtype=torch.float32)
            metric.process({}, [dict(img_id=img['id'], ori_shape=(64, 64), pred_instances=dict(
                bboxes=boxes, scores=torch.ones(len(anns)),
                labels=torch.tensor([label_of[a['category_id']] for a in anns])))])
        return metric.evaluate(len(gt['images']))

    assert not hasattr(np, 'float')  # the stack's numpy has no alias ...
    assert lvis_eval.np.float is float  # ... only lvis.eval's view of it does
    results = run()
    for key in ('lvis/bbox_AP', 'lvis/bbox_AP50', 'lvis/bbox_APr', 'lvis/bbox_APc',
                'lvis/bbox_APf'):
        assert results[key] == pytest.approx(1.0), key
    shim, lvis_eval.np = lvis_eval.np, np
    try:
        with pytest.raises(AttributeError, match='float'):
            run()
    finally:
        lvis_eval.np = shim


# ------------------------------------------------------------------------------- end to end
def _run(args, timeout=600):
    res = run_repo_tool(*args, timeout=timeout)
    return res.stdout + res.stderr


@pytest.fixture(scope='module')
def coco_training(coco, tmp_path_factory):
    """tools/train.py on the tiny OV-COCO config, as a user runs it."""
    work = str(tmp_path_factory.mktemp('work_coco'))
    output = _run([tool_path('train.py'), coco.config, '--work-dir', work])
    return SimpleNamespace(work=work, output=output, ckpt=os.path.join(work, 'iter_3.pth'))


OV_COCO_KEYS = ('coco/novel_ap50', 'coco/base_ap50', 'coco/novel_ap', 'coco/base_ap',
                'coco/bbox_mAP')


@pytest.mark.slow
def test_ov_coco_train_then_test_tools(coco, coco_training, tmp_path):
    assert 'dropped 2 annotations' in coco_training.output  # the novel 'cat', 'hair drier'
    assert os.path.isfile(coco_training.ckpt)
    out = str(tmp_path / 'metrics.json')
    _run([tool_path('test.py'), coco.config, coco_training.ckpt,
          '--work-dir', str(tmp_path / 'test'), '--out', out], timeout=300)
    with open(out) as f:
        metrics = json.load(f)
    assert set(OV_COCO_KEYS) <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in OV_COCO_KEYS)  # evaluated, not -1 (absent)


@pytest.mark.slow
def test_mmdet_own_test_tool_runs_the_config(coco, coco_training, tmp_path):
    import mmdet
    tool = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'tools', 'test.py')
    if not os.path.isfile(tool):
        pytest.skip('this mmdet install ships no tools/test.py')
    output = _run([tool, coco.config, coco_training.ckpt, '--work-dir', str(tmp_path)],
                  timeout=300)
    assert 'coco/novel_ap50' in output


@pytest.mark.slow
def test_ov_lvis_training_evaluates_with_lvis_metric(lvis, tmp_path):
    """Mask R-CNN with the federated loss on the tiny LVIS: rare annotations dropped, the
    validation at the end goes through mmdet's LVISMetric (APr included)."""
    output = _run([tool_path('train.py'), lvis.config,
                   '--work-dir', str(tmp_path)])
    assert "dropped 1 annotations of frequencies ['r']" in output
    assert 'loss_cls' in output and 'loss_mask' in output
    for key in ('lvis/bbox_APr', 'lvis/segm_APr', 'lvis/segm_AP'):
        assert f'{key}: ' in output


def test_bake_keeps_detections_identical(coco, coco_training, tmp_path):
    from mmdet.apis import inference_detector, init_detector

    from pomp_mm.mmdet.classifier import zero_shot_classifiers
    bake_detector = load_tool('bake_detector')
    image = os.path.join(coco.root, 'images', coco.images[4])
    cfg_path, ckpt_path = bake_detector.main([coco.config, coco_training.ckpt, '--out-dir',
                                              str(tmp_path), '--check-image', image])
    baked_cfg = Config.fromfile(cfg_path)
    classifier = baked_cfg.model.roi_head.bbox_head.classifier
    assert classifier.baked and 'text_encoder' not in classifier
    original = init_detector(coco.config, coco_training.ckpt, device='cpu')
    baked = init_detector(cfg_path, ckpt_path, device='cpu')
    clf = zero_shot_classifiers(baked)[0]
    assert clf.num_classes == 65 and clf.class_names == coco.all_classes
    for name in coco.images[4:]:
        a = inference_detector(original, os.path.join(coco.root, 'images', name)).pred_instances
        b = inference_detector(baked, os.path.join(coco.root, 'images', name)).pred_instances
        assert len(a) > 0
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(a[key], b[key])
    assert clf._encoder is None and clf._encoder_cfg is None  # no text tower anywhere

    # a custom vocabulary baked in
    cfg2, ckpt2 = bake_detector.main([coco.config, coco_training.ckpt, '--out-dir',
                                      str(tmp_path / 'mugs'), '--texts', 'mug . webcam'])
    assert Config.fromfile(cfg2).model.roi_head.bbox_head.num_classes == 2


def test_checkpoint_names_the_test_vocabulary(coco, coco_training, tmp_path):
    """The Runner saves the train dataset's metainfo (48 base classes) but the model predicts
    the 65 test classes: the hook writes those, so DetInferencer names and draws them."""
    import mmcv
    from mmdet.apis import DetInferencer, inference_detector, init_detector

    from pomp_mm.mmdet import DetVocabularyCheckHook
    ckpt = torch.load(coco_training.ckpt, map_location='cpu', weights_only=True)
    meta = ckpt['meta']
    assert list(meta['dataset_meta']['classes']) == coco.all_classes
    assert list(meta['train_dataset_meta']['classes']) == coco.base
    DetVocabularyCheckHook().after_load_checkpoint(None, ckpt)  # resuming: train metainfo
    assert list(ckpt['meta']['dataset_meta']['classes']) == coco.base
    assert 'train_dataset_meta' not in ckpt['meta']

    inferencer = DetInferencer(model=coco.config, weights=coco_training.ckpt, device='cpu',
                               show_progress=False)
    assert list(inferencer.model.dataset_meta['classes']) == coco.all_classes
    image = os.path.join(coco.root, 'images', coco.images[4])
    result = inferencer(image, pred_score_thr=0.0, out_dir=str(tmp_path), return_vis=True)
    pred = result['predictions'][0]
    ref = inference_detector(init_detector(coco.config, coco_training.ckpt, device='cpu'),
                             image).pred_instances
    assert len(ref) > 0 and pred['labels'] == ref.labels.tolist()
    np.testing.assert_allclose(pred['scores'], ref.scores.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(pred['bboxes'], ref.bboxes.numpy(), atol=1e-3, rtol=0)
    raw = mmcv.imread(image, channel_order='rgb')
    vis = result['visualization'][0]
    assert vis.shape == raw.shape and (vis != raw).any()  # the boxes are drawn on the image
    assert os.listdir(tmp_path / 'vis')


def test_bake_keeps_a_names_less_npy_names_less(coco, tmp_path):
    """Baking a Detic-style .npy (no class names) must not invent 'class i' names: the baked
    model then passes the vocabulary check, and dataset_meta keeps the checkpoint's names."""
    from pomp_mm.mmdet import DetVocabularyCheckHook
    bake_detector = load_tool('bake_detector')
    model = build_detector(coco.cfg).eval()
    np.save(tmp_path / 'test.npy', model.roi_head.bbox_head.fc_cls.class_weight()[:-1].numpy())
    config = tmp_path / 'npy.py'
    config.write_text(f'_base_ = [{coco.config!r}]\nmodel = dict(roi_head=dict(bbox_head=dict('
                      f'classifier=dict(test_vocabulary=None, '
                      f'test_embeddings={str(tmp_path / "test.npy")!r}))))\n')
    ckpt = str(tmp_path / 'model.pth')
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': {'classes': tuple(coco.all_classes)}}}, ckpt)
    cfg_path, ckpt_path = bake_detector.main([str(config), ckpt, '--out-dir',
                                              str(tmp_path / 'baked')])
    baked_cfg = Config.fromfile(cfg_path)
    assert 'vocabulary' not in baked_cfg.model.roi_head.bbox_head.classifier
    baked = build_detector(baked_cfg)
    loader = SimpleNamespace(dataset=SimpleNamespace(metainfo=dict(classes=coco.all_classes)))
    DetVocabularyCheckHook().before_test(
        SimpleNamespace(model=baked, test_loop=SimpleNamespace(dataloader=loader)))
    meta = torch.load(ckpt_path, map_location='cpu', weights_only=True)['meta']
    assert list(meta['dataset_meta']['classes']) == coco.all_classes


def test_det_demo_writes_a_png(coco, coco_training, tmp_path):
    from PIL import Image
    det_demo = load_tool('det_demo')
    out = str(tmp_path / 'demo.png')
    image = os.path.join(coco.root, 'images', coco.images[0])
    assert det_demo.main([image, coco.config, coco_training.ckpt, '--texts',
                          'headphone . webcam . mug', '--score-thr', '0', '--out', out]) == out
    with Image.open(out) as im:
        assert im.format == 'PNG' and im.size == (64, 64)
    with pytest.raises(SystemExit, match='image not found'):
        det_demo.main([str(tmp_path / 'none.jpg'), coco.config, coco_training.ckpt])


def test_custom_vocabulary_through_det_inferencer(coco, coco_training):
    from mmdet.apis import DetInferencer

    from pomp_mm.mmdet import set_detector_vocabulary
    inferencer = DetInferencer(model=coco.config, weights=coco_training.ckpt, device='cpu',
                               show_progress=False)
    names = set_detector_vocabulary(inferencer.model, ['mug', 'webcam'])
    inferencer.visualizer.dataset_meta = dict(classes=tuple(names), palette='random')
    image = os.path.join(coco.root, 'images', coco.images[0])
    result = inferencer(image, pred_score_thr=0.0, return_datasamples=True)
    labels = result['predictions'][0].pred_instances.labels
    assert len(labels) > 0 and int(labels.max()) < 2


def test_benchmark_det_head_runs(capsys):
    ratio = load_tool('benchmarks/det_head').main(['--tiny', '--classes', '20', '--size', '64',
                                                   '--images', '1', '--rounds', '1'])
    out = capsys.readouterr().out
    assert ratio > 0 and 'median per-pair time ratio (POMP / plain)' in out
    assert '| POMP (PompBBoxHead) |' in out and '| plain Shared2FCBBoxHead |' in out


def test_vocabulary_check_hook(coco):
    from pomp_mm.mmdet import DetVocabularyCheckHook
    model = build_detector(coco.cfg)

    def runner(train_classes, test_classes):
        loader = lambda classes: SimpleNamespace(  # noqa: E731
            dataset=SimpleNamespace(metainfo=dict(classes=tuple(classes))))
        return SimpleNamespace(model=model, train_dataloader=loader(train_classes),
                               val_loop=SimpleNamespace(dataloader=loader(test_classes)),
                               test_loop=SimpleNamespace(dataloader=loader(test_classes)))

    hook = DetVocabularyCheckHook()
    ok = runner(coco.base, coco.all_classes)
    hook.before_train(ok)
    hook.before_val(ok)
    hook.before_test(ok)
    with pytest.raises(ValueError, match='the test dataset has 48 classes but the detector '
                       "head's test_vocabulary has 65"):
        hook.before_test(runner(coco.base, coco.base))
    swapped = list(coco.base)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(ValueError, match="differ from the detector head's vocabulary at index 0: "
                       "'bicycle' vs 'person'"):
        hook.before_train(runner(swapped, coco.all_classes))


@pytest.mark.parametrize('target,dataset_type,count', [
    ('coco', 'CocoDataset', 80), ('objects365', 'Objects365V2Dataset', 365)])
def test_cross_dataset_configs(target, dataset_type, count):
    """Test-only configs: the OV-LVIS model with the target's class names as its test
    vocabulary, in the target dataset's label order."""
    import pomp_mm.mmdet  # noqa: F401
    from mmdet.registry import DATASETS

    from pomp_mm.vocabulary import clean_name, parse_vocabulary
    cfg = Config.fromfile(os.path.join(
        ROOT, 'configs', 'mmdet', f'pomp_mask-rcnn_r50_fpn_lvis-base_to_{target}.py'))
    assert cfg.test_dataloader.dataset.type == dataset_type
    assert cfg.train_dataloader is None and cfg.train_cfg is None
    head = cfg.model.roi_head.bbox_head
    assert head.classifier.vocabulary == 'lvis' and head.num_classes == 1203
    names = list(parse_vocabulary(head.classifier.test_vocabulary).names)
    expected = [clean_name(c) for c in DATASETS.get(dataset_type).METAINFO['classes']]
    assert names == expected and len(names) == count


def test_exported_embeddings_bring_their_class_names(tmp_path):
    """An .npy written by tools/export_embeddings.py (sidecar with names) names the classes;
    a vocabulary that disagrees with the sidecar is refused."""
    emb = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    path = str(tmp_path / 'mugs.npy')
    pomp_mm.save_embeddings(path, emb, ['mug', 'webcam', 'headphone'], clip_model='tiny')
    clf = _classifier(out_features=4, embeddings=path).eval()
    assert clf.class_names == ['mug', 'webcam', 'headphone']
    torch.testing.assert_close(clf.class_weight()[:3], emb)
    with pytest.raises(ValueError, match="class 1 is 'webcam' in the file, 'cup' expected"):
        _classifier(out_features=4, embeddings=path, vocabulary=['mug', 'cup', 'headphone'])


def test_hand_prompt_baseline_keeps_the_single_prompt(coco):
    """A classifier's encoder without a prompt is detection's hand-prompt baseline: the single
    "a photo of a {}." (not the text encoder's mmseg default, ViLD's 14) and no background row."""
    cfg = dict(type='PompTextEncoder', clip_model='tiny')
    clf = _classifier(out_features=len(coco.base) + 1, text_encoder=cfg, vocabulary=coco.base,
                      embed_dim=32)
    assert clf.text_encoder.templates == ['a photo of a {}.']
    assert not clf.text_encoder.cat_bg


def test_detic_style_npy_logits_are_temperature_times_cosine(tmp_path):
    """Official Detic tables are float16 with row norms ~8-10: the logits are temperature x the
    cosine to the L2-normalised rows (background column 0), checked against a reference."""
    import torch.nn.functional as F
    rng = np.random.RandomState(0)
    rows = rng.randn(5, 16)
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True) * rng.uniform(8, 10, (5, 1)))
    path = tmp_path / 'detic.npy'
    np.save(path, rows.astype(np.float16))
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    for temperature in (50.0, 20.0):
        head = _classifier(out_features=6, embed_dim=16, embeddings=str(path),
                           temperature=temperature).eval()
        with torch.no_grad():
            got = head(x)
            z = F.normalize(head.proj(x), dim=1)
        table = torch.from_numpy(rows.astype(np.float16).astype(np.float32))
        want = temperature * z @ F.normalize(table, dim=1).T
        torch.testing.assert_close(got[:, :5], want, atol=1e-4, rtol=1e-4)
        assert torch.all(got[:, 5] == 0)
