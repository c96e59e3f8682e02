"""Convolutional CLIP towers as dense extractors: pomp_mm.conv_clip, ClipPoolRoIExtractor and
the world-CNN detection configs (world v3's CLIP)."""
import os

import pytest
import torch

from pomp_mm.conv_clip import (OpenClipConvNet, conv_tower_kind, dense_embeddings, feature_map,
                               pool_grid, pool_regions)
from pomp_mm.synthetic import protocol
from pomp_mm.synthetic import world_clip as wc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD = dict(clip_model=wc.MODEL_NAME, pretrained=wc.WEIGHTS_PATH)
#: a tiny open_clip ModifiedResNet (attention pooling on a 2x2 grid at 64 px)
TINY_RESNET = {'embed_dim': 32,
               'vision_cfg': {'image_size': 64, 'layers': [1, 1, 1, 1], 'width': 8},
               'text_cfg': {'context_length': 16, 'vocab_size': 49408, 'width': 32, 'heads': 2,
                            'layers': 1}}


@pytest.fixture(scope='module')
def world_tower():
    return OpenClipConvNet(**WORLD)


@pytest.fixture(scope='module')
def resnet_tower():
    torch.manual_seed(0)
    return OpenClipConvNet(TINY_RESNET)


@pytest.mark.parametrize('which', ['world_tower', 'resnet_tower'])
def test_pooling_the_whole_map_is_the_clip_image_embedding(which, request):
    """The tower's head on its full map gives the CLIP's own image embedding (timm average
    pooling and ModifiedResNet attention pooling alike)."""
    tower = request.getfixturevalue(which)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        fmap = tower(x)[0]
        torch.testing.assert_close(pool_regions(tower.visual, fmap), tower.visual(x),
                                   atol=1e-5, rtol=1e-4)
    assert fmap.shape[1] == tower.channels
    assert fmap.shape[-1] * tower.stride == 64


def test_world_tower_geometry_and_dense_embeddings(world_tower):
    """The world CNN: stride 8, 256 channels, 64-d joint space; average pooling commutes with
    the projection, so the per-location embeddings average to the image embedding."""
    assert (world_tower.stride, world_tower.channels, world_tower.embed_dim) == (8, 256, 64)
    assert pool_grid(world_tower.visual) is None
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        dense = dense_embeddings(world_tower.visual, feature_map(world_tower.visual, x))
        want = world_tower.visual(x)
    assert dense.shape == (2, 64, 8, 8)
    torch.testing.assert_close(dense.mean((2, 3)), want, atol=1e-5, rtol=1e-4)


def test_resnet_dense_embeddings_are_maskclips(resnet_tower):
    """Attention pooling: each location's value then output projection (MaskCLIP)."""
    pool = resnet_tower.visual.attnpool
    assert pool_grid(resnet_tower.visual) == (2, 2)
    fmap = torch.randn(1, resnet_tower.channels, 2, 3)
    with torch.no_grad():
        dense = dense_embeddings(resnet_tower.visual, fmap)
        want = pool.c_proj(pool.v_proj(fmap[0, :, 1, 2]))
    assert dense.shape == (1, 32, 2, 3)
    torch.testing.assert_close(dense[0, :, 1, 2], want)


def test_frozen_in_train_mode(world_tower):
    world_tower.train()
    assert not world_tower.visual.training  # batch norm keeps its statistics
    assert not any(p.requires_grad for p in world_tower.parameters())


def test_a_vit_is_refused_by_name():
    with pytest.raises(TypeError, match='VisionTransformer is not a convolutional open_clip '
                       'image tower .* for a ViT use OpenClipViT'):
        OpenClipConvNet('tiny')
    with pytest.raises(TypeError, match='Linear is not a convolutional'):
        conv_tower_kind(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------------------ mmdet
def _extractor(**kwargs):
    import pomp_mm.mmdet  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    return MODELS.build(dict(type='ClipPoolRoIExtractor', **kwargs))


def test_a_whole_image_roi_is_the_clip_image_embedding(world_tower):
    """With one RoIAlign sample per map cell over the whole image, the region embedding is
    exactly the CLIP image embedding; smaller boxes differ."""
    ext = _extractor(roi_layer=dict(output_size=8, sampling_ratio=1), **WORLD)
    assert ext.out_channels == 64 and ext.featmap_strides == [8]
    x = torch.randn(2, 3, 64, 64)
    rois = torch.tensor([[0, 0, 0, 64, 64], [1, 0, 0, 64, 64], [1, 8, 8, 40, 40.]])
    with torch.no_grad():
        got = ext(world_tower(x), rois)
        want = world_tower.visual(x)
    assert got.shape == (3, 64, 1, 1)
    torch.testing.assert_close(got[:2, :, 0, 0], want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got[2, :, 0, 0], want[1], atol=1e-3)


def test_extractor_refuses_bad_input(world_tower):
    with pytest.raises(ValueError, match=r"roi_layer output_size \(4, 4\) must be the "
                       r"attention pool's grid \(2, 2\)"):
        _extractor(clip_model=TINY_RESNET, roi_layer=dict(output_size=4))
    ext = _extractor(**WORLD)
    with pytest.raises(ValueError, match='expects the tower\'s last feature map \\(256 '
                       'channels; OpenClipConvNet\\), got 64 channels'):
        ext((torch.zeros(1, 64, 8, 8),), torch.tensor([[0, 0, 0, 8, 8.]]))


@pytest.mark.slow
def test_cnn_det_configs_build_with_the_world_cnn():
    """The world-CNN detection configs: OpenClipConvNet backbone, ClipPoolRoIExtractor, the
    text encoder on the same CLIP; the protocol's classes; the baseline differs only in the
    text side."""
    import pomp_mm.mmdet  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    pomp = Config.fromfile(os.path.join(
        ROOT, 'configs', 'mmdet', 'pomp_faster-rcnn_world-cnn_synthetic-scenes.py'))
    hand = Config.fromfile(os.path.join(
        ROOT, 'configs', 'mmdet', 'handprompt_faster-rcnn_world-cnn_synthetic-scenes.py'))
    names = [c.name for c in protocol.scene_classes()]
    assert list(pomp.all_classes) == names
    text = pomp.model.roi_head.bbox_head.classifier.text_encoder
    assert text.clip_model == wc.MODEL_NAME and text.prompt.endswith('cnn/pomp/prompt_latest.pth')
    assert hand.model.roi_head.bbox_head.classifier.text_encoder.prompt is None
    hand.model.roi_head.bbox_head.classifier.text_encoder.pop('templates')
    pomp.model.roi_head.bbox_head.classifier.text_encoder.pop('prompt')
    hand.model.roi_head.bbox_head.classifier.text_encoder.pop('prompt')
    assert hand.model == pomp.model
    model = MODELS.build(hand.model)
    assert type(model.backbone).__name__ == 'OpenClipConvNet'
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        fmap = model.backbone(x)
        assert fmap[0].shape == (1, 256, 16, 16)
        emb = model.roi_head.bbox_roi_extractor(fmap, torch.tensor([[0, 0, 0, 128, 128.]]))
    assert emb.shape == (1, 64, 1, 1)


@pytest.mark.slow
def test_ov_diagnose_separates_rpn_head_and_zero_shot(tmp_path):
    """tools/synthetic/ov.py diagnose on 20 validation scenes with an untrained head: the
    region embeddings already name most boxes zero-shot (protocol scenes: 67-73 %), whatever
    the head does; every count is a percentage of the boxes."""
    from helpers import load_tool

    from pomp_mm.synthetic.scenes import write_scene_set
    write_scene_set(str(tmp_path), 'val', 20, 102, progress=False)
    tool = load_tool('synthetic/ov')
    got = tool.diagnose_detector(tool.SETUPS['cnn'].det_configs['hand'], None, str(tmp_path))
    assert got['base']['boxes'] + got['novel']['boxes'] >= 20
    zero_shot = (got['base']['zero_shot'] * got['base']['boxes'] +
                 got['novel']['zero_shot'] * got['novel']['boxes']) / (
        got['base']['boxes'] + got['novel']['boxes'])
    assert zero_shot >= 40.0, got
    for part in got.values():
        assert all(0 <= part[k] <= 100 for k in ('rpn_recall', 'head', 'zero_shot'))


def _world_cnn_detector(**head):
    import pomp_mm.mmdet  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = Config.fromfile(os.path.join(
        ROOT, 'configs', 'mmdet', 'handprompt_faster-rcnn_world-cnn_synthetic-scenes.py'))
    cfg.model.roi_head.bbox_head.update(head)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model, cfg


def test_vlm_fusion_is_f_vlms_geometric_mean():
    """PompBBoxHead(vlm_fusion=...): at test time softmax(cls_score) is, per class,
    p_head^(1-w) * p_clip^w with w = base (train classes) or novel, the head's background, the
    row renormalised; in training, and with both weights 0, the head's own scores."""
    import torch.nn.functional as F
    model, cfg = _world_cnn_detector(vlm_fusion=dict(base=0.35, novel=0.65))
    head = model.roi_head.bbox_head
    names = list(cfg.all_classes)
    from pomp_mm.mmdet import set_detector_vocabulary
    set_detector_vocabulary(model, names)
    model.eval()
    x = torch.randn(5, 64, 1, 1)
    with torch.no_grad():
        fused, _ = head(x)
        head.vlm_fusion, saved = None, head.vlm_fusion
        plain, _ = head(x)
        head.vlm_fusion = saved
        text = F.normalize(head.fc_cls.text_encoder.encode_text(names).float(), dim=1)
    clip = F.softmax(F.normalize(x.flatten(1), dim=1) @ text.T / 0.01, dim=1)
    p = F.softmax(plain, dim=1)
    w = torch.tensor([0.65 if n in cfg.novel_classes else 0.35 for n in names])
    want = torch.cat([p[:, :20] ** (1 - w) * clip ** w, p[:, 20:]], dim=1)
    want = want / want.sum(1, keepdim=True)
    torch.testing.assert_close(F.softmax(fused, dim=1), want, atol=1e-5, rtol=1e-4)
    head.vlm_fusion = dict(base=0.0, novel=0.0, temperature=0.01)
    with torch.no_grad():
        torch.testing.assert_close(F.softmax(head(x)[0], dim=1), p, atol=1e-5, rtol=1e-4)
    model.train()
    head.vlm_fusion = saved
    with torch.no_grad():
        train_scores = head(x)[0]
        head.vlm_fusion = None
        assert torch.equal(train_scores, head(x)[0])  # training: no fusion
    assert train_scores.shape[1] == 16  # the 15 train classes and background


def test_vlm_fusion_refuses_bad_settings():
    from pomp_mm.mmdet.classifier import _check_fusion
    with pytest.raises(ValueError, match=r"vlm_fusion takes base, novel and optionally "
                       r"temperature, got \{'base': 0.3\}"):
        _check_fusion(dict(base=0.3))
    with pytest.raises(ValueError, match='novel weight must be in \\[0, 1\\], got 1.5'):
        _check_fusion(dict(base=0.3, novel=1.5))
    with pytest.raises(ValueError, match='temperature must be positive, got 0'):
        _check_fusion(dict(base=0.3, novel=0.5, temperature=0))
    assert _check_fusion(dict(base=0.35, novel=0.65))['temperature'] == 0.01
