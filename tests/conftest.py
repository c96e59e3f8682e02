import copy

import pytest
import torch

from pomp_mm.testing import TINY_CLIP


@pytest.fixture
def tiny_cfg():
    """A tiny open_clip config (64-wide text tower, random weights)."""
    return copy.deepcopy(TINY_CLIP)


@pytest.fixture
def make_encoder(tiny_cfg):
    """Build a PompTextEncoder on the tiny CLIP; same seed -> same CLIP weights."""
    from pomp_mm import PompTextEncoder

    def make(seed: int = 0, **kwargs):
        kwargs.setdefault('vocabulary', ['cat', 'dog'])
        torch.manual_seed(seed)
        return PompTextEncoder(clip_model=tiny_cfg, **kwargs).eval()

    return make


@pytest.fixture
def reference_clip(tiny_cfg):
    """The open_clip model PompTextEncoder builds for a seed, and the CLIP tokenizer."""
    import open_clip

    from pomp_mm.clip import build_clip

    def make(seed: int = 0):
        torch.manual_seed(seed)
        return build_clip(tiny_cfg), open_clip.tokenizer.SimpleTokenizer()

    return make
