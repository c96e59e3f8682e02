"""The official ViT-B/32 POMP prompts (ShuhuaiRen/POMP-ViT-Base-32 on the HF hub: Dassl files of
width 512) on open_clip's ViT-B-32 and on the Hugging Face clip-vit-base-patch32 tower.

No download: synthetic files in the official format and under the official names, random
weights of the official shapes."""
import pytest
import torch

from pomp_mm import PompTextEncoder
from pomp_mm.clip import clip_config
from pomp_mm.prompt_checkpoint import load_prompt

#: the two files of ShuhuaiRen/POMP-ViT-Base-32 (docs/model_zoo.md)
B32_FILES = {4: 'vit_b32_ep5_randaug2_unc1000_16shots_nctx4_cscFalse_ctpend_seed42.pth.tar',
             16: 'vit_b32_ep20_randaug2_unc1000_16shots_nctx16_cscFalse_ctpend_seed42.pth.tar'}
NAMES = ['cat', 'traffic light', 'hot dog']
#: clip-vit-base-patch32's text config (OpenAI's legacy eos_token_id 2 included)
B32_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=8, eos_token_id=2, bos_token_id=0, projection_dim=512)


def _official(folder, n_ctx, width=512, seed=0):
    """A Dassl checkpoint as the official trainer writes it, under the official name."""
    g = torch.Generator().manual_seed(seed + n_ctx)
    path = str(folder / B32_FILES[n_ctx])
    torch.save({'state_dict': {'ctx': torch.randn(n_ctx, width, generator=g) * 0.02,
                               'token_prefix': torch.zeros(2, 1, width),
                               'token_suffix': torch.zeros(2, 77 - 1 - n_ctx, width)},
                'epoch': 5 if n_ctx == 4 else 20, 'optimizer': None, 'scheduler': None}, path)
    return path


def _b32_text_tiny_image():
    """open_clip's ViT-B-32 text tower (the one the prompts were learned on) with a tiny image
    tower: what a prompt meets, at a fraction of the build time."""
    return dict(clip_config('ViT-B-32'), quick_gelu=True,
                vision_cfg=dict(image_size=32, patch_size=16, width=64, layers=1, head_width=32))


@pytest.mark.parametrize('n_ctx', [4, 16])
def test_official_b32_prompts_load_on_the_b32_text_tower(tmp_path, n_ctx):
    path = _official(tmp_path, n_ctx)
    ckpt = load_prompt(path)
    assert (ckpt.n_ctx, ckpt.width, ckpt.class_token_position) == (n_ctx, 512, 'end')
    assert ckpt.meta['clip_model'] == 'ViT-B/32' and ckpt.meta['source_format'] == 'official'
    torch.manual_seed(0)
    enc = PompTextEncoder(clip_model=_b32_text_tiny_image(), prompt=path, vocabulary=NAMES,
                          cat_bg=False).eval()
    with torch.no_grad():
        emb = enc.encode_text(NAMES)
    assert emb.shape == (3, 512) and torch.allclose(emb.norm(dim=-1), torch.ones(3))


def test_width_mismatch_names_both_widths_and_both_models(hf_clip_folder, tmp_path):
    """A ViT-B/32 prompt (512) on a 64-wide tower: the error names both widths, the tower's
    model id and the CLIP the file name says the prompt was learned for."""
    path = _official(tmp_path, 4)
    for spec in ('tiny', 'transformers:' + hf_clip_folder):
        with pytest.raises(ValueError, match=(
                r'has width 512 but the text tower of (tiny|transformers:.*hf_clip.*) has '
                r'width 64; it was learned for another CLIP model \(ViT-B/32\)')):
            PompTextEncoder(clip_model=spec, prompt=path, vocabulary=NAMES, cat_bg=False)


def test_hf_b32_config_maps_onto_open_clip_vit_b32(tmp_path):
    """clip-vit-base-patch32's text config becomes open_clip ViT-B-32's text tower."""
    transformers = pytest.importorskip('transformers')
    from pomp_mm.towers.hf_clip import open_clip_config
    config = transformers.CLIPConfig(text_config=dict(vocab_size=49408,
                                                      max_position_embeddings=77, **B32_TEXT),
                                     projection_dim=512)
    ours = open_clip_config(config)
    theirs = clip_config('ViT-B-32')
    assert ours['embed_dim'] == theirs['embed_dim'] == 512 and ours['quick_gelu']
    for key, value in theirs['text_cfg'].items():
        assert ours['text_cfg'][key] == value, key
    assert ours['text_cfg']['pool_type'] == 'argmax'  # legacy eos_token_id 2: largest id


@pytest.mark.slow
def test_official_b32_prompt_same_on_open_clip_and_hf_towers(tmp_path):
    """The same official file through open_clip 'ViT-B-32-quickgelu' and a clip-vit-base-
    patch32-shaped HF folder holding the same text weights: the same embeddings (as with
    OpenAI's weights, which both hold)."""
    pytest.importorskip('transformers')
    import open_clip

    from pomp_mm.clip import build_clip
    from pomp_mm.testing import tiny_hf_clip
    folder = tiny_hf_clip(str(tmp_path / 'clip-vit-base-patch32'), **B32_TEXT)
    path = _official(tmp_path, 16)
    hf = PompTextEncoder(clip_model='transformers:' + folder, prompt=path, vocabulary=NAMES,
                         cat_bg=False).eval()
    text = {k: v for k, v in build_clip('transformers:' + folder).state_dict().items()
            if not k.startswith('visual.')}
    oc = open_clip.create_model('ViT-B-32-quickgelu')
    missing, unexpected = oc.load_state_dict(text, strict=False)
    assert not unexpected and all(k.startswith('visual.') for k in missing)
    ref = PompTextEncoder(clip_model='ViT-B-32-quickgelu', clip_module=oc.eval(), prompt=path,
                          vocabulary=NAMES, cat_bg=False).eval()
    with torch.no_grad():
        a, b = hf.encode_text(NAMES), ref.encode_text(NAMES)
    assert a.shape == (3, 512) and (a - b).abs().max() < 1e-5
