import json
import os

import numpy as np
import pytest
import torch

from pomp_mm import load_embeddings, save_embeddings
from pomp_mm.clip import clip_config
from helpers import run_repo_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_save_load_round_trip(tmp_path):
    emb = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    npy, side = save_embeddings(str(tmp_path / 'e.npy'), emb, ['a', 'b', 'c'],
                                clip_model='ViT-B-16/openai')
    assert side == str(tmp_path / 'e.json')
    arr = np.load(npy)
    assert arr.dtype == np.float32 and arr.shape == (3, 8)
    meta = json.loads(open(side).read())
    assert meta['normalized'] is True and meta['class_names'] == ['a', 'b', 'c']
    got, meta2 = load_embeddings(npy, names=['a', 'b', 'c'], dim=8)
    torch.testing.assert_close(got, emb, atol=0, rtol=0)
    assert meta2 == meta


def test_sidecar_of_another_version_is_ignored_or_refused(tmp_path, caplog):
    """The .npy rewritten (another tool, or a crash between the two writes): the sidecar's
    class names describe other numbers and must not be adopted; with class names to check
    against, that is an error (the rows cannot be checked), without, a warning."""
    npy, side_path = save_embeddings(str(tmp_path / 'e.npy'), torch.randn(3, 8),
                                     ['a', 'b', 'c'])
    np.save(npy, np.random.randn(3, 8).astype(np.float32))
    with pytest.raises(ValueError, match=f"'{npy}' does not match its sidecar '{side_path}' "
                       r'\(sha256 [0-9a-f]{64}, the sidecar records [0-9a-f]{64}\)'):
        load_embeddings(npy, names=['a', 'b', 'c'])
    with caplog.at_level('WARNING'):
        _, side = load_embeddings(npy)
    assert side is None and 'describes another version' in caplog.text


def test_detic_float16_without_sidecar(tmp_path):
    arr = np.random.RandomState(0).randn(4, 16).astype(np.float16)
    path = str(tmp_path / 'lvis_v1_clip_a+cname.npy')
    np.save(path, arr)
    got, side = load_embeddings(path, names=list('wxyz'))
    assert side is None and got.dtype == torch.float32
    torch.testing.assert_close(got, torch.from_numpy(arr.astype(np.float32)))
    normed, _ = load_embeddings(path, normalize=True)
    torch.testing.assert_close(normed.norm(dim=-1), torch.ones(4))


def test_bad_inputs(tmp_path):
    npy, _ = save_embeddings(str(tmp_path / 'e.npy'), torch.randn(3, 8), ['a', 'b', 'c'])
    with pytest.raises(ValueError, match='3 rows but the vocabulary has 2 classes'):
        load_embeddings(npy, names=['a', 'b'])
    with pytest.raises(ValueError, match="class 1 is 'b' in the file, 'x' expected"):
        load_embeddings(npy, names=['a', 'x', 'c'])
    with pytest.raises(ValueError, match='embedding width 8, expected 512'):
        load_embeddings(npy, dim=512)
    with pytest.raises(FileNotFoundError, match='missing.npy'):
        load_embeddings(str(tmp_path / 'missing.npy'))
    with pytest.raises(ValueError, match='do not match 2 names'):
        save_embeddings(str(tmp_path / 'f.npy'), torch.randn(3, 8), ['a', 'b'])


def test_export_tool_round_trip(tmp_path, make_encoder):
    """The CLI, as a user runs it, with a prompt checkpoint and a vocabulary file."""
    from pomp_mm import save_prompt

    cfg = tmp_path / 'tiny.json'
    cfg.write_text(json.dumps(clip_config('tiny')))
    weights = tmp_path / 'tiny_clip.pt'
    enc = make_encoder(seed=5, n_ctx=4)
    torch.manual_seed(5)
    from pomp_mm.clip import build_clip
    torch.save(build_clip('tiny').state_dict(), weights)
    prompt = str(tmp_path / 'prompt.pth')
    save_prompt(prompt, enc.prompt_learner.ctx)
    vocab = tmp_path / 'classes.txt'
    vocab.write_text('headphone\nwebcam\nmug\n')
    out = str(tmp_path / 'out.npy')
    res = run_repo_tool('export_embeddings.py', '--vocab', vocab, '--prompt', prompt,
                        '--clip-model', cfg, '--pretrained', weights, '--out', out,
                        '--no-cache', '--device', 'cpu', timeout=300)
    assert 'wrote' in res.stdout
    got, side = load_embeddings(out, names=['headphone', 'webcam', 'mug'], dim=32)
    with torch.no_grad():
        ref = enc.encode_text(['headphone', 'webcam', 'mug'])
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    assert side['prompt_fingerprint'] == enc.prompt_fingerprint()
    assert side['clip_model'].endswith('tiny_clip.pt') and side['normalized'] is True
