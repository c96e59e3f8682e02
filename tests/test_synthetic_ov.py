"""Open-vocabulary segmentation in the synthetic world: the SAN config on the world's CLIP."""
import os

import pytest
import torch
import torch.nn.functional as F

from pomp_mm.synthetic import protocol
from pomp_mm.synthetic import world_clip as wc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEG_CONFIG = os.path.join(ROOT, 'configs', 'mmseg', 'pomp_synthetic-scenes.py')


def test_config_classes_are_the_protocols():
    from mmengine.config import Config
    cfg = Config.fromfile(SEG_CONFIG)
    names = [c.name for c in protocol.scene_classes()]
    assert list(cfg.classes) == names
    assert list(cfg.unseen_classes) == [names[i] for i in protocol.scene_unseen_ids()]
    assert cfg.model.text_encoder.vocabulary == names
    assert cfg.model.decode_head.num_classes == 20


@pytest.fixture(scope='module')
def san_weights(tmp_path_factory):
    from pomp_mm.mmseg.convert import clip_to_san_state_dict
    state = torch.load(wc.WEIGHTS_PATH, map_location='cpu', weights_only=True)
    path = str(tmp_path_factory.mktemp('san') / 'world_san.pth')
    torch.save(clip_to_san_state_dict(state, split=3), path)
    return path


def _build(san_weights):
    import pomp_mm.mmseg  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(SEG_CONFIG)
    cfg.model.pretrained = san_weights
    cfg.model.text_encoder.prompt = None  # the hand templates: no prompt file needed
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def test_converted_clip_runs_in_san_as_in_open_clip(san_weights):
    """SAN's image encoder (3 blocks) gives open_clip's tokens after block 3, and its
    recognition layer with zero attention bias gives every query open_clip's image embedding."""
    model = _build(san_weights)
    clip = wc.load_world_clip()
    x = torch.randn(2, 3, 64, 64)
    hidden = {}
    handle = clip.visual.transformer.resblocks[2].register_forward_hook(
        lambda m, i, o: hidden.setdefault('x', o))
    with torch.no_grad():
        want_emb = F.normalize(clip.encode_image(x).float(), dim=-1)
        outs = model.image_encoder(x)
    handle.remove()
    tokens = hidden['x']  # [B, 1 + 64, 128]
    feat, cls = outs[-1]
    torch.testing.assert_close(cls, tokens[:, 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(feat.flatten(2).transpose(1, 2), tokens[:, 1:], atol=1e-4, rtol=0)
    rec = model.decode_head.rec_with_attnbias
    bias = [torch.zeros(2, 4, rec.sos_token_num, 8, 8)]
    with torch.no_grad():
        got = rec(bias, outs[-1])
    assert got.shape == (2, rec.sos_token_num, 64)
    torch.testing.assert_close(got, want_emb[:, None].expand_as(got), atol=1e-4, rtol=0)


def test_conversion_refuses_bad_input():
    from pomp_mm.mmseg.convert import clip_to_san_state_dict
    state = torch.load(wc.WEIGHTS_PATH, map_location='cpu', weights_only=True)
    with pytest.raises(ValueError, match='split must be in 1..3 for a 4-block ViT, got 4'):
        clip_to_san_state_dict(state, split=4)
    with pytest.raises(ValueError, match='not an open_clip ViT CLIP state dict'):
        clip_to_san_state_dict({k: v for k, v in state.items() if not k.startswith('visual.')},
                               split=3)
