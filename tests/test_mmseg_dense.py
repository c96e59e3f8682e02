"""PompDenseCLIPHead: open-vocabulary segmentation on the world's convolutional CLIP.

The head runs on the world CNN CLIP itself (pomp-world-CNN-T, 1.2 M image parameters, 64 px
inputs): zero-shot numbers against a reference, the seen-only loss, the configs through
mmengine, the errors, and that SAN keeps its background-row check.
"""
import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmseg')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, 'configs', 'mmseg')
POMP_CONFIG = os.path.join(CONFIGS, 'pomp_world-cnn_synthetic-scenes.py')
HAND_CONFIG = os.path.join(CONFIGS, 'handprompt_world-cnn_synthetic-scenes.py')
SAN_CONFIG = os.path.join(CONFIGS, 'pomp_synthetic-scenes.py')


@pytest.fixture(scope='module')
def world():
    """The world CNN CLIP's name and weights, and a frozen copy of the whole CLIP."""
    import pomp_mm.mmseg  # noqa: F401  (registers the head and OpenClipConvNet)
    from pomp_mm.clip import build_clip
    from pomp_mm.synthetic.world_clip import MODEL_NAME, WEIGHTS_PATH
    init_default_scope('mmseg')
    return MODEL_NAME, WEIGHTS_PATH, build_clip(MODEL_NAME, WEIGHTS_PATH)


def make_head(world, num_classes=5, **kwargs):
    from mmseg.registry import MODELS
    name, weights, _ = world
    torch.manual_seed(0)
    return MODELS.build(dict(type='PompDenseCLIPHead', num_classes=num_classes,
                             clip_model=name, pretrained=weights, **kwargs))


def feature_map_of(world, images):
    from pomp_mm.conv_clip import OpenClipConvNet
    backbone = OpenClipConvNet(world[0], world[1])
    return backbone(images)


def labels_batch(labels):
    """SegDataSamples holding ``labels`` [B, H, W]."""
    h, w = labels.shape[-2:]
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), padding_size=[0, 0, 0, 0])
    return [SegDataSample(metainfo=meta, gt_sem_seg=PixelData(data=lab[None])) for lab in labels]


def model_config(path, **changes):
    """The config's model, with a prompt that is not there yet (tools/synthetic/ov.py makes it)
    replaced by the hand templates."""
    cfg = Config.fromfile(path).model
    if cfg.text_encoder.get('prompt') and not os.path.isfile(cfg.text_encoder.prompt):
        cfg.text_encoder.prompt = None
    for key, value in changes.items():
        *path, last = key.split('.')
        node = cfg
        for part in path:
            node = node[part]
        node[last] = value
    return cfg


def build(cfg):
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


# ------------------------------------------------------------------------------- zero shot
def test_zero_residual_gives_zero_shot_clip_scores(world):
    """At initialisation the logits are CLIP's own: temperature x cosine of each location's
    pooled embedding with the class embeddings, whatever the text rows' scale and dtype."""
    _, _, clip = world
    head = make_head(world).eval()
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    (fmap,) = feature_map_of(world, images)
    assert fmap.shape == (2, 256, 8, 8)
    text = torch.randn(5, 64, dtype=torch.float64) * 7  # any scale, another dtype
    with torch.no_grad():
        logits = head.forward([images, (fmap,), text])

    # Reference, by hand: average pooling of one location is the location, then the CLIP's
    # linear projection (no bias in the world CNN's head).
    proj = clip.visual.head.proj.weight                                   # [64, 256]
    pixels = torch.einsum('bchw,dc->bdhw', fmap, proj)
    # ...and the mean of the pixel embeddings is the CLIP's image embedding (pooling is linear)
    torch.testing.assert_close(pixels.mean((2, 3)), clip.encode_image(images), atol=1e-5,
                               rtol=1e-4)
    cosine = torch.einsum('bdhw,kd->bkhw', F.normalize(pixels, dim=1),
                          F.normalize(text.float(), dim=1))
    scale = clip.logit_scale.exp()
    assert float(head.logit_scale.detach().exp()) == pytest.approx(float(scale), rel=1e-6)
    assert logits.dtype == torch.float32 and logits.shape == (2, 5, 8, 8)
    torch.testing.assert_close(logits, scale * cosine, atol=1e-5, rtol=1e-5)

    # predict_by_feat: mmseg's resize to the input size
    meta = [dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64))]
    assert head.predict_by_feat(logits, meta).shape == (2, 5, 64, 64)


def test_half_precision_head(world):
    """After .half() the head takes the encoders' float32 outputs and answers in float16."""
    head = make_head(world).eval()
    images = torch.randn(1, 3, 64, 64)
    (fmap,) = feature_map_of(world, images)
    text = torch.randn(5, 64)
    with torch.no_grad():
        full = head.forward([images, (fmap,), text])
        half = head.half().forward([images, (fmap,), text])
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, atol=5e-2, rtol=2e-2)


# ------------------------------------------------------------------------------- seen-only loss
def test_excluded_classes_get_no_probability_and_no_gradient(world):
    """With classes 1 and 3 excluded, the loss is that of a head given only the seen rows
    (labels remapped), and neither the excluded text rows nor their probabilities move."""
    head = make_head(world).train()
    torch.nn.init.normal_(head.residual[-1].weight, std=1e-3)  # a trained-looking residual
    head.set_loss_excluded_classes([3, 1, 3])
    assert head.loss_excluded_classes == (1, 3)
    torch.manual_seed(2)
    images = torch.randn(2, 3, 64, 64)
    (fmap,) = feature_map_of(world, images)
    text = torch.randn(5, 64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 64, 64))
    labels = torch.tensor([0, 2, 4])[labels]                    # seen ids only
    labels[:, :8] = 255                                         # ignored pixels
    losses = head.loss([images, (fmap,), text], labels_batch(labels), None)
    losses['loss_ce'].backward()
    assert torch.all(text.grad[[1, 3]] == 0)
    assert torch.all(text.grad[[0, 2, 4]].abs().sum(1) > 0)
    assert head.residual[-1].weight.grad.abs().sum() > 0        # the residual learns

    # Zero probability for the excluded channels, the seen ones' softmax unchanged.
    logits = torch.randn(2, 5, 4, 4)
    probs = head._mask_excluded(logits).softmax(1)
    assert torch.all(probs[:, [1, 3]] == 0)
    torch.testing.assert_close(probs[:, [0, 2, 4]], logits[:, [0, 2, 4]].softmax(1))

    # The same loss as a seen-only classifier.
    seen = make_head(world, num_classes=3).train()
    seen.load_state_dict(head.state_dict())
    remap = torch.full((256,), 255, dtype=torch.long)
    remap[torch.tensor([0, 2, 4])] = torch.arange(3)
    want = seen.loss([images, (fmap,), text.detach()[[0, 2, 4]]],
                     labels_batch(remap[labels]), None)
    torch.testing.assert_close(losses['loss_ce'].detach(), want['loss_ce'], atol=1e-5, rtol=1e-5)

    with pytest.raises(ValueError, match=r'excluded class ids \[5\] are outside 0..4'):
        head.set_loss_excluded_classes([5])


# ------------------------------------------------------------------------------- the configs
@pytest.mark.slow
@pytest.mark.parametrize('path', [POMP_CONFIG, HAND_CONFIG])
def test_config_builds_trains_predicts_and_switches_vocabulary(world, path):
    model = build(model_config(path))
    head = model.decode_head
    assert type(head).__name__ == 'PompDenseCLIPHead' and model.num_classes == 20
    assert model.text_encoder.cat_bg is False
    # the unseen scene classes: lavender star, lime rectangle, maroon octagon, pink kite,
    # olive parallelogram
    assert head.loss_excluded_classes == (3, 12, 13, 16, 17)
    model.train()
    assert not head.clip_visual.training and not model.image_encoder.visual.training

    torch.manual_seed(3)
    labels = torch.randint(0, 20, (2, 64, 64))
    labels[(labels[..., None] == torch.tensor(head.loss_excluded_classes)).any(-1)] = 255
    samples = labels_batch(labels)
    data = model.data_preprocessor({'inputs': [torch.rand(3, 64, 64) * 255] * 2,
                                    'data_samples': samples}, True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg'}
    assert torch.isfinite(losses['decode.loss_ce'])

    model.eval()
    data = model.data_preprocessor({'inputs': [torch.rand(3, 64, 64) * 255],
                                    'data_samples': labels_batch(labels[:1])}, False)
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'])[0]
    assert out.seg_logits.data.shape == (20, 64, 64)
    assert int(out.pred_sem_seg.data.max()) < 20

    model.set_vocabulary(['purple circle', 'lavender star', 'sofa'])
    assert model.num_classes == model.out_channels == head.num_classes == 3
    assert head.loss_excluded_classes == (1,)  # lavender star, at its new id
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'])[0]
    assert out.seg_logits.data.shape == (3, 64, 64)

    # One class: no "no object" output to tell it from; the model keeps its vocabulary.
    with pytest.raises(ValueError, match=r"num_classes >= 2, got 1"):
        model.set_vocabulary(['sofa'])
    assert model.class_names == ('purple circle', 'lavender star', 'sofa')
    assert head.num_classes == 3


# ------------------------------------------------------------------------------- errors
def test_class_rows_must_match(world):
    head = make_head(world).eval()
    images = torch.randn(1, 3, 64, 64)
    (fmap,) = feature_map_of(world, images)
    with pytest.raises(ValueError, match=r'shape \(6, 64\), expected \[num_classes=5, '
                                         r'embed_dim=64\].*cat_bg=False'):
        head.forward([images, (fmap,), torch.randn(6, 64)])
    with pytest.raises(ValueError, match=r'shape \(4, 64\), expected \[num_classes=5'):
        head.forward([images, (fmap,), torch.randn(4, 64)])
    with pytest.raises(ValueError, match=r'shape \(5, 32\), expected .*embed_dim=64'):
        head.forward([images, (fmap,), torch.randn(5, 32)])
    with pytest.raises(ValueError, match=r'shape \(1, 128, 8, 8\), expected \[B, 256, h, w\]'):
        head.forward([images, (torch.randn(1, 128, 8, 8),), torch.randn(5, 64)])
    with pytest.raises(ValueError, match=r'\[images, image_features, class_embeddings\].*2 items'):
        head.forward([(fmap,), torch.randn(5, 64)])


def test_build_errors_name_the_value(world):
    with pytest.raises(ValueError, match=r'num_classes >= 2, got 1'):
        make_head(world, num_classes=1)
    with pytest.raises(ValueError, match=r'in_channels=128 but the map .* has 256 channels'):
        make_head(world, in_channels=128)
    with pytest.raises(ValueError, match=r'num_convs must be an int >= 0, got -1'):
        make_head(world, num_convs=-1)
    with pytest.raises(ValueError, match=r'logit_scale_init must be in .*got 0'):
        make_head(world, logit_scale_init=0)
    from mmseg.registry import MODELS
    with pytest.raises(TypeError, match='not a convolutional open_clip image tower'):
        MODELS.build(dict(type='PompDenseCLIPHead', num_classes=2, clip_model='tiny'))


def test_segmentor_checks_the_text_rows_and_class_weights(world):
    cfg = model_config(HAND_CONFIG, **{'text_encoder.cat_bg': True})
    with pytest.raises(ValueError, match='PompDenseCLIPHead .* must have cat_bg=False'):
        build(cfg)
    loss = dict(type='CrossEntropyLoss', loss_name='loss_ce', class_weight=[1.0] * 21)
    cfg = model_config(HAND_CONFIG, **{'decode_head.loss_decode': loss})
    with pytest.raises(ValueError, match=r'loss_ce has 21 class weights .* num_classes = 20'):
        build(cfg)
    # The head pools the image encoder's map with its own copy of the tower: the same CLIP.
    cfg = model_config(HAND_CONFIG, **{'decode_head.pretrained': None})
    with pytest.raises(ValueError, match="decode head's CLIP tower is not the image encoder's"):
        build(cfg)
    # A uniform list follows set_vocabulary.
    model = build(model_config(HAND_CONFIG, **{'decode_head.loss_decode': dict(
        loss, class_weight=[1.0] * 20)}))
    model.set_vocabulary(['purple circle', 'tan square'])
    assert list(model.decode_head.loss_decode.class_weight) == [1.0, 1.0]


def test_san_still_needs_its_background_row(world):
    """The background-row requirement is SAN's: it still fires for the SAN config."""
    from mmseg.registry import MODELS
    from pomp_mm.mmseg import PompSideAdapterCLIPHead
    assert PompSideAdapterCLIPHead.needs_background_row is True
    assert getattr(MODELS.get('SideAdapterCLIPHead'), 'needs_background_row', True) is True
    cfg = model_config(SAN_CONFIG, pretrained=None, **{'text_encoder.cat_bg': False})
    with pytest.raises(ValueError, match=r'must have cat_bg=True: SAN reads the last class'):
        build(cfg)
