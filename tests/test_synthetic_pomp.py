"""The committed world CLIP, and POMP learning for real in the synthetic world."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pomp_mm.synthetic import protocol
from pomp_mm.synthetic import world_clip as wc
from pomp_mm.synthetic.datasets import render_eval_set
from pomp_mm.synthetic.render import render_object

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def clip():
    return wc.load_world_clip()


def _features(clip, images):
    with torch.no_grad():
        return F.normalize(clip.encode_image(wc.images_to_tensor(images)).float(), dim=-1)


def test_committed_clip_matches_its_card(clip):
    card = wc.read_card()
    assert wc.sha256_file(wc.WEIGHTS_PATH) == card['sha256']
    assert os.path.getsize(wc.WEIGHTS_PATH) <= 10 * 2 ** 20
    assert card['tolerance_points'] == 1.0
    got = wc.hand_prompt_accuracy(clip, list(card['hand_prompt_top1']))
    for name, want in card['hand_prompt_top1'].items():
        assert abs(got[name] - want) <= 1.0, (name, got[name], want)
        assert want > 3 * protocol.eval_sets()[name].chance  # it did learn the world


def test_corrupted_checkpoint_is_refused(tmp_path):
    bad = tmp_path / 'clip.pt'
    shutil.copy(wc.WEIGHTS_PATH, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{bad}' have sha256 [0-9a-f]{{64}}, but .* records "
                       f"{wc.read_card()['sha256']}"):
        wc.world_clip_weights(str(bad))
    with pytest.raises(FileNotFoundError, match='world CLIP weights not found'):
        wc.world_clip_weights(str(tmp_path / 'missing.pt'))


def test_registered_model_name_builds_everywhere(clip):
    from pomp_mm import PompTextEncoder
    enc = PompTextEncoder(clip_model=wc.MODEL_NAME, pretrained=wc.WEIGHTS_PATH,
                          vocabulary='synthetic-24k', templates='single', cat_bg=False)
    assert enc.tower.context_length == 32
    torch.testing.assert_close(enc.tower.logit_scale, clip.logit_scale)
