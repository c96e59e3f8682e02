"""Hugging Face CLIP text towers (``clip_model='transformers:<folder>'``) against
transformers' own ``CLIPModel``, on tiny random models saved in the test."""
import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip('transformers')

NAMES = ['cat', 'hot dog', "person's bag", 'traffic light', 'café', 'x-ray machine']
ATTENTION = ['padded', 'grouped', 'varlen']


def _hf(folder):
    model = transformers.CLIPModel.from_pretrained(folder).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)


def _features(out):
    # transformers 5 returns a model output whose pooler_output is projected; 4.x a tensor
    return getattr(out, 'pooler_output', out)


@torch.no_grad()
def _reference(folder, texts):
    """What a transformers user gets: padded batch, get_text_features, L2-normalised."""
    model, tok = _hf(folder)
    feats = _features(model.get_text_features(**tok(texts, padding=True, return_tensors='pt')))
    return F.normalize(feats.float(), dim=-1)


def _variant(src, dst, **text_cfg):
    """A copy of the tiny folder with text (and, for hidden_act, vision) config changes."""
    shutil.copytree(src, dst)
    path = os.path.join(dst, 'config.json')
    with open(path) as f:
        cfg = json.load(f)
    cfg['text_config'].update(text_cfg)
    for key in ('hidden_act', 'layer_norm_eps'):
        if key in text_cfg:
            cfg['vision_config'][key] = text_cfg[key]
    with open(path, 'w') as f:
        json.dump(cfg, f)
    return str(dst)


def _encoder(folder, **kw):
    from pomp_mm import PompTextEncoder
    kw.setdefault('vocabulary', NAMES)
    return PompTextEncoder(clip_model='transformers:' + folder, cat_bg=False, **kw).eval()


def test_templates_equal_get_text_features(hf_clip_folder):
    templates = ['a photo of a {}.', 'a drawing of the {}']
    enc = _encoder(hf_clip_folder, templates=templates)
    with torch.no_grad():
        ours = enc.encode_text(NAMES)
    ref = F.normalize(sum(_reference(hf_clip_folder, [t.format(n) for n in NAMES])
                          for t in templates), dim=-1)
    assert ours.shape == (len(NAMES), 32)
    assert (ours - ref).abs().max() < 1e-5


def test_word_initialised_context_is_the_hand_template(hf_clip_folder):
    """``n_ctx=4, ctx_init='a photo of a'``: the prompt is "a photo of a {name}." itself, on
    every attention path, with and without the shared prefix."""
    enc = _encoder(hf_clip_folder, n_ctx=4, ctx_init='a photo of a')
    ref = _reference(hf_clip_folder, [f'a photo of a {n}.' for n in NAMES])
    for attention in ATTENTION:
        for share_prefix in (True, False):
            enc.attention, enc.share_prefix = attention, share_prefix
            with torch.no_grad():
                ours = enc.encode_text(NAMES)
            assert (ours - ref).abs().max() < 1e-5, (attention, share_prefix)


@pytest.mark.parametrize('change', [dict(eos_token_id=2), dict(hidden_act='gelu'),
                                    dict(layer_norm_eps=1e-6)],
                         ids=['legacy-eos', 'gelu', 'eps'])
def test_config_variants_match(hf_clip_folder, tmp_path, change):
    """OpenAI's configs carry the legacy eos_token_id=2 (pool at the largest id, as
    CLIPTextTransformer does); GELU towers and other epsilons map too."""
    folder = _variant(hf_clip_folder, tmp_path / 'variant', **change)
    enc = _encoder(folder, templates=['a photo of a {}.'])
    with torch.no_grad():
        ours = enc.encode_text(NAMES)
    assert (ours - _reference(folder, [f'a photo of a {n}.' for n in NAMES])).abs().max() < 1e-5


def test_hf_and_open_clip_towers_agree_with_a_learned_prompt(hf_clip_folder, tmp_path):
    """The same weights as an open_clip model (config dict + state-dict file) give the same
    embeddings through a learned prompt; tokenizers agree on plain names."""
    from pomp_mm import save_prompt
    from pomp_mm.clip import build_clip
    from pomp_mm.towers.hf_clip import open_clip_config

    torch.manual_seed(3)
    prompt = save_prompt(str(tmp_path / 'p.pt'), torch.randn(4, 64) * 0.02,
                         clip_model='transformers:tiny')
    clip = build_clip('transformers:' + hf_clip_folder)
    weights = str(tmp_path / 'open_clip.pt')
    torch.save(clip.state_dict(), weights)
    cfg = open_clip_config(transformers.AutoConfig.from_pretrained(hf_clip_folder))
    from pomp_mm import PompTextEncoder
    names = ['cat', 'hot dog', 'traffic light', 'x-ray machine']
    oc = PompTextEncoder(clip_model=cfg, pretrained=weights, prompt=prompt, vocabulary=names,
                         cat_bg=False).eval()
    hf = _encoder(hf_clip_folder, prompt=prompt, vocabulary=names)
    with torch.no_grad():
        a, b = hf.encode_text(names), oc.encode_text(names)
    assert (a - b).abs().max() < 1e-5


def test_image_tower_and_pretrainer(hf_clip_folder):
    """The image tower maps too (pre-training needs it): get_image_features, and one POMP
    loss step whose gradient reaches the prompt."""
    from pomp_mm.clip import build_clip
    from pomp_mm.pretrain import PompPretrainer

    clip = build_clip('transformers:' + hf_clip_folder)
    model, _ = _hf(hf_clip_folder)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = _features(model.get_image_features(pixel_values=images))
        assert (clip.encode_image(images) - ref).abs().max() < 1e-5
    pre = PompPretrainer(clip_model='transformers:' + hf_clip_folder, vocabulary=NAMES, n_ctx=4,
                         num_sampled=3)
    out = pre(inputs=images, labels=torch.tensor([0, 2, 5]))
    out['loss'].backward()
    assert pre.text_encoder.prompt_learner.ctx.grad.abs().sum() > 0
    assert pre.prompt_metadata()['clip_model'] == 'transformers:' + hf_clip_folder


def test_tokenizer_adapter_rows(hf_clip_folder):
    from pomp_mm.towers import hf_tokenizer
    tok = hf_tokenizer('transformers:' + hf_clip_folder, 77)
    hf = transformers.AutoTokenizer.from_pretrained(hf_clip_folder)
    rows = tok(['a cat', 'the dog ' * 80])
    assert rows.shape == (2, 77) and rows.dtype == torch.long
    want = hf('a cat')['input_ids']
    assert rows[0, :len(want)].tolist() == want and not rows[0, len(want):].any()
    assert rows[1, 0] == tok.sot_token_id and rows[1, -1] == tok.eot_token_id
    assert (tok.sot_token_id, tok.eot_token_id) == (49406, 49407)


def test_errors_name_the_problem(hf_clip_folder, tmp_path):
    from pomp_mm.clip import build_clip
    with pytest.raises(ValueError, match='names no model'):
        build_clip('transformers:')
    with pytest.raises(FileNotFoundError, match='nowhere'):
        build_clip('transformers:' + str(tmp_path / 'nowhere'))
    with pytest.raises(ValueError, match="pretrained='openai'"):
        build_clip('transformers:' + hf_clip_folder, 'openai')
    text_only = tmp_path / 'text_only'
    text_only.mkdir()
    (text_only / 'config.json').write_text(json.dumps({'model_type': 'clip_text_model'}))
    with pytest.raises(ValueError, match="'clip_text_model' model, not a whole CLIP"):
        build_clip('transformers:' + str(text_only))
    folder = _variant(hf_clip_folder, tmp_path / 'tanh', hidden_act='gelu_new')
    with pytest.raises(ValueError, match="gelu_new"):
        build_clip('transformers:' + folder)


def test_eval_tool_takes_a_hf_model_without_pretrained(hf_clip_folder, image_folder, tmp_path):
    """--clip-model transformers:<folder> brings its weights: no --pretrained asked for, and
    its preprocessing (32 px tower) applies to the folder's images."""
    from helpers import load_tool
    out = tmp_path / 'out'
    rc = load_tool('eval_classification').main(
        ['--datasets', 'none', '--folder', f'mine={image_folder}',
         '--clip-model', 'transformers:' + hf_clip_folder, '--device', 'cpu', '--workers', '0',
         '--no-ensemble', '--out-dir', str(out)])
    assert rc == 0
    assert 'mine' in (out / 'results.csv').read_text().splitlines()[0]
