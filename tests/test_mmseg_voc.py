"""Open-vocabulary SAN on a tiny generated VOC: unit checks, then tools/train.py + tools/test.py.

The end-to-end test inherits configs/mmseg/pomp_voc.py and swaps in tiny towers (64-wide ViT
with 3 layers, pomp_mm's tiny CLIP text tower, 10 queries) and 64x64 images.
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

pytest.importorskip('mmseg')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

import pomp_mm  # noqa: E402
from pomp_mm.clip import clip_config  # noqa: E402
from pomp_mm.testing import TINY_SAN  # noqa: E402
from helpers import run_repo_tool, tool_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(ROOT, 'configs', 'mmseg', 'pomp_voc.py')
VOC = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
       'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
       'train', 'tvmonitor')
UNSEEN = ('pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
UNSEEN_IDS = tuple(VOC.index(c) for c in UNSEEN)  # 15..19 in the 20-class label space

TINY_CONFIG = """
_base_ = [{base!r}]
data_root = {root!r}
model = dict({tiny_san!r},
             text_encoder=dict(_delete_=True, type='PompTextEncoder', clip_model={clip!r},
                               prompt={prompt!r}, dataset_name='voc', cat_bg=True))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='IgnoreUnseenClasses', classes={{{{_base_.classes}}}},
         unseen_classes={{{{_base_.unseen_classes}}}}),
    dict(type='RandomCrop', crop_size=(64, 64)),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
_voc = dict(_delete_=True, type='PascalVOCDataset', data_root=data_root,
            metainfo={{{{_base_.metainfo}}}},
            data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(_voc, ann_file='ImageSets/Segmentation/train.txt',
                                     pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(_voc, ann_file='ImageSets/Segmentation/val.txt',
                                   pipeline=test_pipeline))
test_dataloader = val_dataloader
# AmpOptimWrapper (inherited from SAN) needs CUDA
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
max_iters = 2
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [dict(type='PolyLR', power=1.0, begin=0, end=max_iters, by_epoch=False)]
# no best-checkpoint copy: each save re-formats the config with yapf (seconds on a busy CPU)
default_hooks = dict(checkpoint=dict(interval=max_iters, save_best=None), logger=dict(interval=1))
"""


def _write_voc(root: str) -> None:
    """Four 64x64 images; masks with seen and unseen VOC ids (1..20), background 0 and 255."""
    from PIL import Image
    rng = np.random.default_rng(0)
    names = [f'2007_00000{i}' for i in range(4)]
    for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i, name in enumerate(names):
        img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(os.path.join(root, 'JPEGImages', name + '.jpg'))
        mask = np.zeros((64, 64), np.uint8)             # VOC background
        mask[:32, :32] = 1 + i                          # seen (aeroplane..boat)
        mask[:32, 32:] = 8 + i                          # seen (cat..diningtable)
        mask[32:, :32] = 16 + i                         # unseen (pottedplant..train)
        mask[60:, :] = 255                              # VOC's void border
        Image.fromarray(mask, mode='L').save(os.path.join(root, 'SegmentationClass',
                                                          name + '.png'))
    split = os.path.join(root, 'ImageSets', 'Segmentation')
    with open(os.path.join(split, 'train.txt'), 'w') as f:
        f.write('\n'.join(names[:3]) + '\n')
    with open(os.path.join(split, 'val.txt'), 'w') as f:
        f.write('\n'.join(names[2:]) + '\n')


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A tiny VOC, a 64-wide prompt and a config inheriting pomp_voc.py."""
    root = str(tmp_path_factory.mktemp('voc'))
    _write_voc(root)
    prompt = pomp_mm.save_prompt(os.path.join(root, 'prompt.pth'), torch.randn(4, 64) * 0.02,
                                 clip_model='tiny')
    config = os.path.join(root, 'tiny_voc.py')
    with open(config, 'w') as f:
        f.write(TINY_CONFIG.format(base=BASE_CONFIG, root=root, clip='tiny', prompt=prompt,
                                  tiny_san=TINY_SAN))
    return SimpleNamespace(root=root, config=config, prompt=prompt, cfg=Config.fromfile(config))


DELETE = object()


def build_model(tiny, **changes):
    """Build the tiny config's model, after applying dotted-key ``changes`` (``'a.b': v``;
    ``DELETE`` removes the key)."""
    import pomp_mm.mmseg  # noqa: F401
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = copy.deepcopy(tiny.cfg.model)
    for key, value in changes.items():
        *path, last = key.split('.')
        node = cfg
        for part in path:
            node = node[part]
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    torch.manual_seed(0)
    return MODELS.build(cfg)


# ------------------------------------------------------------------------------- units
def test_ignore_unseen_classes_maps_unseen_ids_to_255():
    from pomp_mm.mmseg import IgnoreUnseenClasses
    seg = np.array([list(range(20)) + [255]], dtype=np.uint8)
    for classes in (VOC, 'voc'):
        out = IgnoreUnseenClasses(classes, list(UNSEEN))(dict(gt_seg_map=seg.copy()))
        expected = [255 if i in UNSEEN_IDS else i for i in range(20)] + [255]
        assert out['gt_seg_map'].tolist() == [expected]
    assert seg.tolist() == [list(range(20)) + [255]]  # the input map is not modified


def test_ignore_unseen_classes_errors():
    from pomp_mm.mmseg import IgnoreUnseenClasses
    with pytest.raises(ValueError, match=r"'sofaa' is not in classes.*did you mean \['sofa'\]"):
        IgnoreUnseenClasses(VOC, ['sofaa'])
    with pytest.raises(TypeError, match='list of class names'):
        IgnoreUnseenClasses(VOC, 'sofa')
    with pytest.raises(KeyError, match='after LoadAnnotations'):
        IgnoreUnseenClasses(VOC, ['sofa'])(dict(img=None))


def test_head_init_weights_without_checkpoint(tiny):
    """mmseg's own SideAdapterCLIPHead crashes here (the reason for PompSideAdapterCLIPHead)."""
    from mmseg.registry import MODELS
    model = build_model(tiny)
    model.init_weights()  # must not raise
    head_cfg = copy.deepcopy(tiny.cfg.model.decode_head)
    head_cfg.type = 'SideAdapterCLIPHead'
    head_cfg.pop('no_object_weight')  # a pomp_mm argument
    with pytest.raises(AttributeError, match='init_weights'):
        MODELS.build(head_cfg).init_weights()


def test_unseen_classes_are_masked_in_the_loss_only(tiny):
    model = build_model(tiny)
    head = model.decode_head
    assert model.num_classes == 20 and head.loss_excluded_classes == UNSEEN_IDS
    logits = torch.randn(2, 10, 21)
    probs = head._mask_excluded(logits).softmax(-1)
    seen = [i for i in range(21) if i not in UNSEEN_IDS]  # + the background column
    assert torch.all(probs[..., list(UNSEEN_IDS)] == 0)
    torch.testing.assert_close(probs[..., seen], logits[..., seen].softmax(-1))

    # Unseen pixels that reach the loss mean the pipeline lacks IgnoreUnseenClasses.
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    sample = SegDataSample(gt_sem_seg=PixelData(data=torch.tensor([[[0, 255, 17]]])))
    with pytest.raises(ValueError, match=r"\['sofa'\].*IgnoreUnseenClasses"):
        model._check_labels([sample])
    sample = SegDataSample(gt_sem_seg=PixelData(data=torch.tensor([[[0, 20]]])))
    with pytest.raises(ValueError, match=r'label ids \[20\] outside 0..19'):
        model._check_labels([sample])


@pytest.mark.parametrize('changes, error, match', [
    ({'decode_head.num_classes': 15}, ValueError,
     r'decode_head.num_classes=15 but the text encoder vocabulary has 20 classes'),
    ({'unseen_classes': ['sofaa']}, ValueError,
     r"'sofaa' is not in the text encoder vocabulary.*did you mean \['sofa'\]"),
    ({'unseen_classes': list(VOC)}, ValueError, 'nothing is left to train on'),
    ({'text_encoder.cat_bg': False}, ValueError, 'cat_bg=True'),
    ({'decode_head.type': 'SideAdapterCLIPHead', 'decode_head.no_object_weight': DELETE},
     TypeError, 'PompSideAdapterCLIPHead'),
])
def test_build_errors(tiny, changes, error, match):
    with pytest.raises(error, match=match):
        build_model(tiny, **changes)


def test_class_weight_length_is_checked(tiny):
    # no_object_weight (the configs' default) sizes the weights from num_classes...
    cls_loss = build_model(tiny).decode_head.loss_decode[0]
    assert list(cls_loss.class_weight) == [1.0] * 20 + [0.1]
    # ...and without it a stale list is refused
    losses = copy.deepcopy(tiny.cfg.model.decode_head.loss_decode)
    losses[0]['class_weight'] = [1.0] * 171 + [0.1]  # SAN's COCO-Stuff value
    with pytest.raises(ValueError, match='172 class weights.*21'):
        build_model(tiny, **{'decode_head.loss_decode': losses,
                             'decode_head.no_object_weight': DELETE})


def test_prompt_width_must_fit(tiny, tmp_path):
    narrow = pomp_mm.save_prompt(str(tmp_path / 'narrow.pth'), torch.zeros(4, 32))
    with pytest.raises(ValueError, match='width 32 but the text tower .* width 64'):
        build_model(tiny, **{'text_encoder.prompt': narrow})


def test_vocabulary_check_hook(tiny):
    from pomp_mm.mmseg import VocabularyCheckHook
    model = build_model(tiny)

    def runner(classes):
        loader = SimpleNamespace(dataset=SimpleNamespace(metainfo=dict(classes=classes)))
        return SimpleNamespace(model=model, train_dataloader=loader)

    VocabularyCheckHook().before_train(runner(VOC))
    # mmseg's PascalVOCDataset without a metainfo override keeps 'background' as class 0
    with pytest.raises(ValueError, match=r"index 0: 'background' vs 'aeroplane'"):
        VocabularyCheckHook().before_train(runner(('background', ) + VOC))


# ------------------------------------------------------------------------------- documented use
SAN_BASE = 'mmseg::san/san-vit-b16_coco-stuff164k-640x640.py'


def _documented_snippets():
    """The mmseg config snippets users copy: README's and the fragment's usage comment."""
    import re
    with open(os.path.join(ROOT, 'README.md')) as f:
        readme = f.read()
    blocks = [b for b in re.findall(r'```python\n(.*?)```', readme, re.S)
              if 'PompTextEncoder' in b and SAN_BASE in b]
    assert len(blocks) == 1, 'README: expected one mmseg config snippet inheriting SAN'
    fragment = os.path.join(ROOT, 'configs', 'mmseg', '_base_', 'pomp_text_encoder.py')
    with open(fragment) as f:
        comment = re.search(r'#\n((?:#   .*\n)+)', f.read()).group(1)
    usage = ''.join(line[len('#   '):] + '\n' for line in comment.splitlines())
    usage = usage.replace('path/to/configs/mmseg/_base_/pomp_text_encoder.py', fragment)
    return {'readme': blocks[0], 'fragment': usage}


@pytest.fixture(scope='module')
def tiny_clip_checkpoint(tiny, tmp_path_factory):
    """An mmseg-format checkpoint of the tiny SAN's image side, to stand in for SAN's
    `pretrained` (which the documented snippets keep)."""
    path = str(tmp_path_factory.mktemp('san_clip') / 'clip.pth')
    torch.manual_seed(1)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in build_model(tiny).state_dict().items()
             if k.startswith(('image_encoder.', 'decode_head.rec_with_attnbias.'))}
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize('source', ['readme', 'fragment'])
def test_documented_snippet_builds_on_mmseg_san_config(source, tiny, tiny_clip_checkpoint,
                                                       tmp_path):
    """The snippet merged into mmseg's own SAN config builds and initialises: its text encoder
    replaces CLIPTextEncoder's dict (no inherited embed_dims, norm_cfg, ...), and SAN's
    `pretrained` reaches the image side only."""
    import pomp_mm.mmseg  # noqa: F401
    from mmseg.registry import MODELS
    snippet = tmp_path / 'snippet.py'
    snippet.write_text(_documented_snippets()[source])
    ckpt, state = tiny_clip_checkpoint
    tiny_model = dict(TINY_SAN, pretrained=ckpt,
                      text_encoder=dict(clip_model='tiny',
                                        pretrained=None, prompt=tiny.prompt))
    config = tmp_path / 'tiny.py'
    config.write_text(f'_base_ = [{str(snippet)!r}]\nmodel = {tiny_model!r}\n')
    cfg = Config.fromfile(str(config))
    assert cfg.model.text_encoder.to_dict() == dict(
        type='PompTextEncoder', clip_model='tiny', pretrained=None, prompt=tiny.prompt,
        dataset_name='coco-stuff', cat_bg=True,
        **({'prompt_trainable': False} if source == 'fragment' else {}))
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'OpenVocabEncoderDecoder' and model.num_classes == 171
    model.init_weights()  # Pretrained_Part on the image side, none on the text side
    torch.testing.assert_close(model.image_encoder.state_dict()['cls_token'],
                               state['image_encoder.cls_token'])
    assert _predict(model.eval()).seg_logits.data.shape[0] == 171


def test_plain_multimodal_encoder_decoder_initialises(tiny, tiny_clip_checkpoint):
    """mmseg's own MultimodalEncoderDecoder gives every part SAN's `pretrained` as a
    'Pretrained_Part' init_cfg; PompTextEncoder keeps the weights it loaded itself."""
    ckpt, state = tiny_clip_checkpoint
    model = build_model(tiny, **{'type': 'MultimodalEncoderDecoder', 'pretrained': ckpt,
                                 'unseen_classes': DELETE})
    assert model.text_encoder.init_cfg['type'] == 'Pretrained_Part'
    names = list(VOC[:3])
    with torch.no_grad():
        before = model.text_encoder.encode_text(names)
    model.init_weights()
    torch.testing.assert_close(model.image_encoder.state_dict()['cls_token'],
                               state['image_encoder.cls_token'])
    with torch.no_grad():
        torch.testing.assert_close(model.text_encoder.encode_text(names), before)


# ------------------------------------------------------------------------------- set_vocabulary
def _training_batch(model, labels):
    from mmengine.structures import PixelData
    meta = dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
                padding_size=[0, 0, 0, 0])
    sample = SegDataSample(metainfo=meta, gt_sem_seg=PixelData(data=labels))
    data = model.data_preprocessor({'inputs': [torch.rand(3, 64, 64) * 255],
                                    'data_samples': [sample]}, True)
    return data['inputs'], data['data_samples']


def test_set_vocabulary_resets_the_loss_mask(tiny):
    """The unseen ids name classes of the old vocabulary: they must not mask the new one."""
    model = build_model(tiny).train()
    head = model.decode_head
    assert head.loss_excluded_classes == UNSEEN_IDS
    model.set_vocabulary(['sofa', 'cat', 'sheep'])  # unseen names at new positions
    assert set(model.unseen_classes) == {'sofa', 'sheep'} and head.loss_excluded_classes == (0, 2)
    model.set_vocabulary([f'thing{i}' for i in range(20)])  # no unseen name left
    assert model.unseen_ids == () and head.loss_excluded_classes == ()
    # class 17 (sofa's old id) is learnable: a masked target would cost ~1e38
    losses = model.loss(*_training_batch(model, torch.full((1, 64, 64), 17)))
    assert losses['decode.loss_cls_ce'] < 100


def test_set_vocabulary_resizes_the_class_weights(tiny):
    """Training after set_vocabulary: [1.0] * C + [no object] follows the new class count; a
    weight list that cannot be mapped is refused with a clear error at loss time."""
    model = build_model(tiny, **{'unseen_classes': DELETE}).train()
    model.set_vocabulary(['cat', 'dog', 'sofa'])
    assert list(model.decode_head.loss_decode[0].class_weight) == [1.0] * 3 + [0.1]
    batch = _training_batch(model, torch.randint(0, 3, (1, 64, 64)))
    # the same loss as a model configured for these 3 classes from the start
    ref = build_model(tiny, **{'unseen_classes': DELETE, 'decode_head.num_classes': 3,
                               'text_encoder.dataset_name': DELETE,
                               'text_encoder.vocabulary': ['cat', 'dog', 'sofa']}).train()
    ref.decode_head.loss_decode[0].class_weight = [1.0, 1.0, 1.0, 0.1]
    ref.load_state_dict(model.state_dict())
    torch.manual_seed(0)  # SAN samples its mask points
    got = model.loss(*batch)
    torch.manual_seed(0)
    want = ref.loss(*batch)
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6)
    model.decode_head.loss_decode[0].class_weight = [1.0, 1.0, 1.0, 1.0]
    torch.manual_seed(0)
    assert abs(float(model.loss(*batch)['decode.loss_cls_ce'].detach()
                     - got['decode.loss_cls_ce'].detach())) > 1e-4
    model.decode_head.loss_decode[0].class_weight = [1.0, 2.0, 1.0, 0.1]
    model.set_vocabulary(['cat', 'dog'])  # per-class weights: no way to map them
    with pytest.raises(ValueError, match='4 class weights but the head has num_classes'):
        model.loss(*batch)


def test_single_class_vocabulary_predicts_class_or_no_object(tiny):
    """One class: SAN's "no object" is the alternative, given back as the ignore index."""
    model = build_model(tiny).eval()
    model.set_vocabulary('cat .')
    assert model.num_classes == 1 and model.class_names == ('cat', )
    out = _predict(model)
    logits, pred = out.seg_logits.data, out.pred_sem_seg.data
    assert logits.shape[0] == 2  # cat, no object
    expected = torch.where(logits.argmax(0, keepdim=True) == 0, 0, 255)
    assert torch.equal(pred, expected)

    # The scores: query 0 covers the left half and is a cat, query 1 the right half and is
    # nothing, so the left is cat and the right is no object.
    head = model.decode_head
    masks = torch.full((1, 2, 4, 4), -20.)
    masks[0, 0, :, :2] = masks[0, 1, :, 2:] = 20.
    cls = torch.tensor([[[5., -5.], [-5., 5.]]])
    meta = [dict(img_shape=(4, 4), pad_shape=(4, 4), ori_shape=(4, 4),
                 padding_size=[0, 0, 0, 0])]
    scores = head.predict_by_feat([masks, cls], meta)
    assert scores.shape == (1, 2, 4, 4)
    pred = model.postprocess_result(scores, [SegDataSample(metainfo=meta[0])])[0]
    assert pred.pred_sem_seg.data[0].tolist() == [[0, 0, 255, 255]] * 4

    # Back to several classes: mmseg's scores, no extra channel.
    model.set_vocabulary(['cat', 'dog'])
    assert _predict(model).seg_logits.data.shape[0] == 2
    assert head.predict_by_feat([masks, torch.zeros(1, 2, 3)], meta).shape == (1, 2, 4, 4)


def test_single_class_needs_a_head_with_no_object(tiny):
    losses = copy.deepcopy(tiny.cfg.model.decode_head.loss_decode)
    losses[0]['class_weight'] = [1.0] * 20 + [0.1]
    model = build_model(tiny, **{'unseen_classes': DELETE,
                                 'decode_head.type': 'SideAdapterCLIPHead',
                                 'decode_head.loss_decode': losses,
                                 'decode_head.no_object_weight': DELETE})
    with pytest.raises(ValueError, match=r"single class \(\['cat'\]\).*PompSideAdapterCLIPHead"):
        model.set_vocabulary(['cat'])
    assert model.num_classes == 20 and len(model.class_names) == 20  # unchanged


# ------------------------------------------------------------------------------- end to end
@pytest.fixture(scope='module')
def training(tiny, tmp_path_factory):
    """tools/train.py on the tiny config, as a user runs it: its work dir and output."""
    work = str(tmp_path_factory.mktemp('work'))
    res = run_repo_tool('train.py', tiny.config, '--work-dir', work, timeout=600)
    return SimpleNamespace(work=work, output=res.stdout + res.stderr)


@pytest.mark.slow
def test_train_then_test_tools(tiny, training, tmp_path):
    output = training.output
    ckpt = os.path.join(training.work, 'iter_2.pth')
    assert os.path.isfile(ckpt)
    keys = ('mIoU', 'mIoU-seen', 'mIoU-unseen', 'hIoU')
    assert all(f'{k}:' in output for k in keys)  # the validation at the end of training

    out = str(tmp_path / 'metrics.json')
    run_repo_tool('test.py', tiny.config, ckpt, '--work-dir', str(tmp_path / 'test'), '--out', out,
                  timeout=300)
    with open(out) as f:
        metrics = json.load(f)
    assert set(keys) <= set(metrics)
    runs = glob.glob(str(tmp_path / 'test' / '*' / '*.json'))  # mmengine's own record
    assert len(runs) == 1
    with open(runs[0]) as f:
        assert set(keys) <= set(json.load(f))


@pytest.mark.parametrize('texts', ['cat . sofa . window', 'cat .'])
def test_seg_demo_writes_an_overlay_with_legend(tiny, training, tmp_path, texts):
    """tools/seg_demo.py in-process (the tools' subprocess path is covered above); one class
    is segmented against "no object"."""
    import importlib.util

    from PIL import Image
    spec = importlib.util.spec_from_file_location('seg_demo',
                                                  tool_path('seg_demo.py'))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    image = glob.glob(os.path.join(tiny.root, 'JPEGImages', '*.jpg'))[0]
    out = demo.main([image, tiny.config, os.path.join(training.work, 'iter_2.pth'),
                     '--texts', texts, '--out', str(tmp_path / 'out.png'),
                     '--device', 'cpu'])
    drawn = Image.open(out)
    assert drawn.height == 64 and drawn.width > 64  # the image plus the legend panel
    # a known class keeps the checkpoint's colour
    meta = dict(classes=VOC, palette=[[i, 0, 0] for i in range(20)])
    assert demo.palette_for(['cat', 'window'], meta)[0] == [VOC.index('cat'), 0, 0]


def test_coco_stuff_config_split():
    """configs/mmseg/pomp_coco-stuff.py: 156 seen / 15 unseen names that all exist in mmseg's
    COCO-Stuff classes, in the encoder, the pipeline and the metric alike."""
    from mmengine.config import Config

    from pomp_mm.vocabulary import load_vocabulary
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'mmseg', 'pomp_coco-stuff.py'))
    vocab = load_vocabulary('coco-stuff')
    unseen = cfg.unseen_classes
    assert len(unseen) == 15 and len(vocab) - len(unseen) == 156
    assert set(unseen) <= set(vocab.ids)
    assert cfg.model.decode_head.num_classes == len(vocab) == 171
    assert cfg.model.text_encoder.dataset_name == 'coco-stuff'
    ignore = [t for t in cfg.train_dataloader.dataset.pipeline
              if t['type'] == 'IgnoreUnseenClasses'][0]
    assert ignore['unseen_classes'] == unseen == cfg.test_evaluator.unseen_classes
    assert 'prompt_learner.ctx' in cfg.optim_wrapper.paramwise_cfg.custom_keys
    import pomp_mm.mmseg  # noqa: F401
    from mmseg.registry import TRANSFORMS
    transform = TRANSFORMS.build(ignore)
    label = np.array([[vocab.ids.index('wall-concrete'), vocab.ids.index('person')]], np.uint8)
    out = transform({'gt_seg_map': label.copy()})['gt_seg_map']
    assert out.tolist() == [[255, vocab.ids.index('person')]]


@pytest.mark.parametrize('target,dataset_type,count', [
    ('ade20k', 'ADE20KDataset', 150), ('pascal-context', 'PascalContextDataset59', 59)])
def test_cross_dataset_configs(target, dataset_type, count):
    """Test-only configs switch the vocabulary, the head's class count and the test set, and
    their class list matches the toolkit dataset's (what VocabularyCheckHook enforces)."""
    from mmengine.config import Config
    from mmseg.registry import DATASETS

    from pomp_mm.vocabulary import load_vocabulary
    import pomp_mm.mmseg  # noqa: F401
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'mmseg',
                                       f'pomp_coco-stuff_to_{target}.py'))
    vocab = load_vocabulary(target)
    assert cfg.model.text_encoder.dataset_name == target and len(vocab) == count
    assert cfg.model.decode_head.num_classes == count
    # the head sizes its class weights from num_classes (test_class_weight_length_is_checked)
    assert cfg.model.decode_head.no_object_weight == 0.1
    assert cfg.model.unseen_classes is None
    assert cfg.test_dataloader.dataset.type == dataset_type
    assert cfg.test_evaluator.type == 'IoUMetric'
    dataset_cls = DATASETS.get(dataset_type)
    assert tuple(dataset_cls.METAINFO['classes'])[-count:] == vocab.ids


@pytest.mark.parametrize('name', ['voc', 'coco-stuff'])
def test_hand_template_baselines(name):
    """Each POMP config has a hand-template twin that differs only in the text encoder."""
    from mmengine.config import Config

    from pomp_mm import get_templates
    pomp = Config.fromfile(os.path.join(ROOT, 'configs', 'mmseg', f'pomp_{name}.py'))
    hand = Config.fromfile(os.path.join(ROOT, 'configs', 'mmseg', f'handprompt_{name}.py'))
    assert hand.model.text_encoder.prompt is None and pomp.model.text_encoder.prompt
    assert len(get_templates(hand.model.text_encoder.templates)) == 14
    pomp.model.text_encoder.update(prompt=None, templates='vild')
    assert hand.model.to_dict() == pomp.model.to_dict()
    assert hand.test_dataloader.to_dict() == pomp.test_dataloader.to_dict()


def _predict(model, size=64):
    from mmseg.structures import SegDataSample
    meta = dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size),
                padding_size=[0, 0, 0, 0])
    data = model.data_preprocessor({'inputs': [torch.rand(3, size, size) * 255],
                                    'data_samples': [SegDataSample(metainfo=meta)]})
    with torch.no_grad():
        return model.predict(data['inputs'], data['data_samples'])[0]


def test_vocabulary_switch_at_test_time(tiny):
    """The same weights predict any class list: the number of output classes follows it."""
    model = build_model(tiny).eval()
    assert _predict(model).seg_logits.data.shape[0] == 20
    model.set_vocabulary('cat . sofa . window')
    out = _predict(model)
    assert out.seg_logits.data.shape[0] == 3
    assert int(out.pred_sem_seg.data.max()) < 3
    enc = model.text_encoder
    for names in (['cat', 'sofa', 'window'], ['dog', 'boat', 'chair']):  # same size: no stale
        model.set_vocabulary(names)
        with torch.no_grad():
            rows = enc()[:3] / enc.tower.logit_scale.exp()
            torch.testing.assert_close(rows, enc.encode_text(names), atol=1e-5, rtol=0)


def test_half_precision_model_predicts(tiny):
    """After model.half() the head gets float16 class embeddings (the text encoder returns
    float32, and SAN's einsum does not mix dtypes)."""
    model = build_model(tiny).eval().half()
    meta = dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
                padding_size=[0, 0, 0, 0])
    image = torch.rand(1, 3, 64, 64).half()
    with torch.no_grad():
        out = model.predict(image, [SegDataSample(metainfo=meta)])[0]
    assert out.seg_logits.data.dtype == torch.float16 and out.seg_logits.data.shape[0] == 20
    with torch.no_grad():
        full = model.float().predict(image.float(), [SegDataSample(metainfo=meta)])[0]
    torch.testing.assert_close(out.seg_logits.data.float(), full.seg_logits.data,
                               atol=2e-2, rtol=2e-2)  # float16 rounding of the same model


def test_prompt_fine_tuning_gets_its_own_learning_rate(tiny):
    """prompt_trainable=True: the seen-class loss reaches the prompt, whose optimizer group
    takes the config's 'prompt_learner.ctx' lr multiplier."""
    from mmengine.optim import build_optim_wrapper
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    model = build_model(tiny, **{'text_encoder.prompt_trainable': True}).train()
    ctx = model.text_encoder.prompt_learner.ctx
    assert ctx.requires_grad
    meta = dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
                padding_size=[0, 0, 0, 0])
    label = torch.randint(0, 15, (1, 64, 64))  # seen classes only
    sample = SegDataSample(metainfo=meta, gt_sem_seg=PixelData(data=label))
    data = model.data_preprocessor({'inputs': [torch.rand(3, 64, 64) * 255],
                                    'data_samples': [sample]}, True)
    losses = model.loss(data['inputs'], data['data_samples'])
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='AdamW', lr=1e-4),
        paramwise_cfg=dict(custom_keys={'prompt_learner.ctx': dict(lr_mult=0.1)})))
    groups = [g for g in wrapper.optimizer.param_groups if any(p is ctx for p in g['params'])]
    assert len(groups) == 1 and groups[0]['lr'] == pytest.approx(1e-5)


def test_text_weights_from_an_mmseg_format_checkpoint(tmp_path):
    """SAN configs pass an mmseg-format CLIP checkpoint as `pretrained`: PompTextEncoder reads
    its text tower and embeds exactly as mmseg's own CLIPTextEncoder does."""
    from mmseg.models.text_encoder import CLIPTextEncoder

    from pomp_mm import PompTextEncoder
    init_default_scope('mmseg')
    torch.manual_seed(0)
    names = ['cat', 'traffic light', 'sofa']
    ref_enc = CLIPTextEncoder(vocabulary=names, templates='vild', embed_dims=64, num_layers=2,
                              num_heads=2, output_dims=32, cat_bg=False).eval()
    for p in ref_enc.parameters():  # mmseg leaves them uninitialised until its init_weights
        torch.nn.init.normal_(p, std=0.05)
    path = str(tmp_path / 'san_clip.pth')
    torch.save({f'text_encoder.{k}': v for k, v in ref_enc.state_dict().items()}, path)
    cfg = dict(clip_config('tiny'), quick_gelu=True)  # mmseg's CLIP text encoder uses QuickGELU
    enc = PompTextEncoder(clip_model=cfg, pretrained=path, vocabulary=names,
                          templates='vild').eval()
    with torch.no_grad():
        ref = ref_enc.template_encode(names)
        got = enc.encode_text(names)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    torch.save({'text_encoder.token_embedding.weight': torch.zeros(49408, 64)}, path)
    with pytest.raises(ValueError, match='lacks text weights'):
        PompTextEncoder(clip_model=cfg, pretrained=path, vocabulary=names)


@pytest.mark.slow
def test_mmseg_own_test_tool_runs_the_config(tiny, training, tmp_path):
    """mmseg's own tools/test.py (shipped in its package) works with our config: the config's
    custom_imports load pomp_mm, which also makes the mmengine checkpoint loadable."""
    import mmseg
    tool = os.path.join(os.path.dirname(mmseg.__file__), '.mim', 'tools', 'test.py')
    if not os.path.isfile(tool):
        pytest.skip(f'this mmseg package does not ship {tool}')
    res = subprocess.run([sys.executable, tool, tiny.config,
                          os.path.join(training.work, 'iter_2.pth'),
                          '--work-dir', str(tmp_path / 'mmseg_test')],
                         capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    output = res.stdout + res.stderr
    assert res.returncode == 0, output[-5000:]
    assert 'hIoU' in output and 'mIoU-unseen' in output
