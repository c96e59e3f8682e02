"""SigLIP text towers (bidirectional, pooled at the last position, a Hugging Face sentencepiece
tokenizer with no start token) against open_clip's own ``encode_text``, on a tiny random
SigLIP-style config whose tokenizer is trained in the test (pomp_mm.testing)."""
import json
import logging

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('transformers')

NAMES = ['cat', 'hot dog', "person's bag", 'traffic light', 'café', 'x-ray machine',
         'Zebra_crossing']
ATTENTION = ['padded', 'grouped', 'varlen']


@pytest.fixture(scope='module')
def siglip(siglip_tokenizer_folder):
    """(config dict, the CLIP built from it with seed 0, open_clip's tokenizer for it)."""
    from open_clip.tokenizer import HFTokenizer

    from pomp_mm.clip import build_clip
    from pomp_mm.testing import tiny_siglip_config
    cfg = tiny_siglip_config(siglip_tokenizer_folder)
    torch.manual_seed(0)
    clip = build_clip(cfg)
    # what open_clip.get_tokenizer builds from the config's text_cfg
    tok = HFTokenizer(siglip_tokenizer_folder, context_length=64, clean='canonicalize')
    return cfg, clip, tok


def _encoder(siglip, **kw):
    from pomp_mm import PompTextEncoder
    cfg, clip, _ = siglip
    kw.setdefault('vocabulary', NAMES)
    return PompTextEncoder(clip_model=cfg, clip_module=clip, cat_bg=False, **kw).eval()


@torch.no_grad()
def _reference(siglip, texts):
    _, clip, tok = siglip
    return clip.encode_text(tok(texts), normalize=True)


def test_the_tiny_config_is_siglip_shaped(siglip):
    from pomp_mm.towers import SigLipTower, build_text_tower
    cfg, clip, tok = siglip
    tower = build_text_tower(clip, cfg)
    assert isinstance(tower, SigLipTower) and tower.family == 'siglip'
    assert type(clip).__name__ == 'CustomTextCLIP' and clip.logit_bias is not None
    assert not tower.causal and tower.pool_type == 'last' and not tower.shares_prefix
    assert tower.context_length == 64
    assert isinstance(clip.text.text_projection, torch.nn.Linear)  # proj_bias
    row = tok(['a photo of a cat.'])[0]  # no start token, </s>, then padding
    ids = tok.tokenizer('a photo of a cat', add_special_tokens=False)['input_ids']
    assert row[:len(ids)].tolist() == ids and row[len(ids)] == 1
    assert (row[len(ids) + 1:] == tok.tokenizer.pad_token_id).all()


@pytest.mark.parametrize('pad_token', ['</s>', '<pad>'])
def test_hand_templates_equal_encode_text(siglip, tmp_path, pad_token):
    """Templates go through open_clip's tokenizer (cleaning, </s>, padding to 64) and the
    whole 64 positions; '<pad>' pads with 0 where SigLIP's own pads with 1 (</s>)."""
    from open_clip.tokenizer import HFTokenizer

    from pomp_mm.testing import tiny_siglip_config, write_siglip_tokenizer
    cfg, clip, tok = siglip
    if pad_token != '</s>':
        folder = write_siglip_tokenizer(str(tmp_path / 'tok'), pad_token=pad_token)
        cfg = tiny_siglip_config(folder)
        tok = HFTokenizer(folder, context_length=64, clean='canonicalize')
        siglip = (cfg, clip, tok)
    templates = ['a photo of a {}.', 'itap of the {}']
    enc = _encoder(siglip, templates=templates)
    with torch.no_grad():
        ours = enc.encode_text(NAMES)
    ref = F.normalize(sum(_reference(siglip, [t.format(n) for n in NAMES]) for t in templates),
                      dim=-1)
    assert ours.shape == (len(NAMES), 32)
    assert (ours - ref).abs().max() < 1e-5


def test_word_initialised_context_is_the_hand_template(siglip):
    """``ctx_init='a photo of a'``: the prompt is 'a photo of a {name}.' itself on every
    attention path, with share_prefix asked for or not (both run whole prompts); with the
    name first ('front') it is '{name} a photo of a'."""
    enc = _encoder(siglip, ctx_init='a photo of a')
    ref = _reference(siglip, [f'a photo of a {n}.' for n in NAMES])
    for attention in ATTENTION:
        for share_prefix in (True, False):
            enc.attention, enc.share_prefix = attention, share_prefix
            with torch.no_grad():
                ours = enc.encode_text(NAMES)
            assert (ours - ref).abs().max() < 1e-5, (attention, share_prefix)
    with torch.no_grad():  # the per-step path: the vocabulary's token table by index
        ours = enc.encode_classes(torch.tensor([3, 0, 6]))
    assert (ours - ref[[3, 0, 6]]).abs().max() < 1e-5
    front = _encoder(siglip, ctx_init='a photo of a', class_token_position='front')
    with torch.no_grad():
        ours = front.encode_text(NAMES)
    assert (ours - _reference(siglip, [f'{n} a photo of a' for n in NAMES])).abs().max() < 1e-5


@pytest.mark.parametrize('position', ['end', 'middle', 'front'])
def test_learned_prompt_layout(siglip, position, tmp_path):
    """A random context: tokens are [pad] * n_ctx, the name's ids, </s>, padding to 64 (EOT
    at 63, where the tower pools); the assembled embeddings are the context and the name's
    token embeddings in the order asked for, and the encoder's output is the tower run on
    that hand-built sequence. A saved prompt loads back to the same embeddings."""
    from pomp_mm import PompTextEncoder, save_prompt
    cfg, clip, tok = siglip
    n_ctx = 3
    torch.manual_seed(5)
    enc = _encoder(siglip, n_ctx=n_ctx, class_token_position=position, prompt_trainable=True)
    learner = enc.prompt_learner
    assert not learner.start_token and not learner.has_shared_prefix
    batch = learner.tokenize(NAMES, enc.tokenizer, 64)
    pad, eos = tok.tokenizer.pad_token_id, 1
    emb = clip.text.token_embedding.weight
    ctx = learner.ctx.detach()
    hand = []
    for i, name in enumerate(NAMES):
        ids = tok.tokenizer(tok.clean_fn(name), add_special_tokens=False)['input_ids']
        row = [pad] * n_ctx + ids + [eos]
        assert batch.tokens[i].tolist() == row + [pad] * (64 - len(row)), name
        assert batch.name_lens[i] == len(ids) and batch.eot[i] == 63
        words, rest = emb[ids], emb[[eos] + [pad] * (64 - len(row))]
        half = n_ctx // 2
        parts = {'end': [ctx, words], 'front': [words, ctx],
                 'middle': [ctx[:half], words, ctx[half:]]}[position]
        hand.append(torch.cat(parts + [rest]))
    hand = torch.stack(hand)
    with torch.no_grad():
        assembled = learner(enc.tower.embed_tokens(batch.tokens), batch)
        assert torch.equal(assembled, hand)
        text = clip.text
        x = text.transformer(hand + text.positional_embedding, attn_mask=None)
        want = F.normalize(text.text_projection(text.ln_final(x)[:, -1]), dim=-1)
        ours = enc.encode_text(NAMES)
    assert (ours - want).abs().max() < 1e-5
    path = save_prompt(str(tmp_path / 'p.pt'), learner.ctx.detach(), clip_model='tiny-siglip',
                       class_token_position=position)
    again = PompTextEncoder(clip_model=cfg, clip_module=clip, prompt=path, vocabulary=NAMES,
                            cat_bg=False).eval()
    with torch.no_grad():
        assert (again.encode_text(NAMES) - ours).abs().max() < 1e-6


def test_shared_prefix_and_truncation_are_switched_off_with_a_reason(siglip, caplog):
    with caplog.at_level(logging.INFO, logger='pomp_mm.text_encoder'):
        enc = _encoder(siglip, n_ctx=4, attention='varlen')
    assert not enc.share_prefix and not enc.truncate
    text = caplog.text
    assert 'share_prefix switched off' in text and 'bidirectional' in text
    assert 'every position depends on the class name' in text
    assert 'truncate switched off' in text and 'full context length 64' in text
    assert "attention='varlen' runs as padded" in text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='pomp_mm.text_encoder'):
        _encoder(siglip, n_ctx=4, share_prefix=False, truncate=False, attention='padded')
    assert 'switched off' not in caplog.text  # nothing to switch off: nothing said


def test_a_name_too_long_for_the_context_names_the_class(siglip):
    long = ' '.join(['zebra crossing'] * 30)
    enc = _encoder(siglip, n_ctx=4, vocabulary=['cat', long])
    with pytest.raises(ValueError, match=r"the prompt of class 'zebra crossing zebra.* more "
                                         r"than the context length 64"):
        enc.encode_text(['cat', long])
    plain = _encoder(siglip, templates=['a photo of a {}.'], vocabulary=['cat', long])
    with pytest.raises(ValueError, match=r"class 'zebra crossing zebra.*context length 64"):
        plain.encode_text(['cat', long])


def test_a_bidirectional_tower_runs_whole_prompts_only(siglip):
    from pomp_mm.prompt_learner import PromptEmbeddings
    from pomp_mm.towers import build_text_tower
    tower = build_text_tower(siglip[1])
    with pytest.raises(ValueError, match='whole prompts of 64 tokens, got 10'):
        tower(torch.zeros(2, 10, 64), torch.tensor([9, 9]))
    shared = PromptEmbeddings(torch.tensor([63, 63]), prefix=torch.zeros(5, 64),
                              suffix=torch.zeros(2, 59, 64))
    with pytest.raises(ValueError, match='siglip tower runs whole prompts only'):
        tower.encode(shared)


def test_tokenizer_adapter(siglip):
    """Rows are open_clip's; a tokenizer that adds a start token is refused by name."""
    from open_clip.tokenizer import HFTokenizer
    from tokenizers import processors

    from pomp_mm.towers.siglip import SigLipTokenizer, siglip_tokenizer
    cfg, _, tok = siglip
    ours = siglip_tokenizer(cfg, 64)
    assert isinstance(ours, SigLipTokenizer)
    assert (ours.sot_token_id, ours.eot_token_id, ours.num_special) == (None, 1, 1)
    texts = ['a photo of a Cat.', 'the dog ' * 80]
    assert torch.equal(ours(texts), tok(texts))
    assert ours(texts)[1, -1] == 1  # too long a text is cut and still ends with </s>
    assert ours.encode('A Cat!') == tok.tokenizer('a cat', add_special_tokens=False)['input_ids']
    bos = HFTokenizer(cfg['text_cfg']['hf_tokenizer_name'], context_length=64)
    bos.tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single='<unk> $A </s>', special_tokens=[('<unk>', 2), ('</s>', 1)])
    with pytest.raises(TypeError, match='no start token'):
        SigLipTokenizer(bos)


def test_a_registered_model_name_uses_open_clip_get_tokenizer(siglip, tmp_path):
    """A SigLIP-style model by name (its config registered with open_clip): the tokenizer is
    open_clip.get_tokenizer's, and the hand prompt still equals encode_text."""
    import open_clip

    from pomp_mm import PompTextEncoder
    from pomp_mm.clip import register_model_config
    cfg, clip, tok = siglip
    path = tmp_path / 'tiny-siglip-pomp-test.json'
    path.write_text(json.dumps(cfg))
    register_model_config(str(path))
    assert type(open_clip.get_tokenizer('tiny-siglip-pomp-test')).__name__ == 'HFTokenizer'
    torch.manual_seed(0)  # the same random weights as the fixture's
    enc = PompTextEncoder(clip_model='tiny-siglip-pomp-test', vocabulary=NAMES,
                          ctx_init='a photo of a', cat_bg=False).eval()
    with torch.no_grad():
        ours = enc.encode_text(NAMES)
    assert (ours - _reference(siglip, [f'a photo of a {n}.' for n in NAMES])).abs().max() < 1e-5


def test_pretrainer_step_trains_the_prompt(siglip):
    """One POMP step (the softmax local-contrast loss, as the method defines it) on the SigLIP
    tower: finite loss, a gradient on the context, and an SGD step that changes the loss."""
    from pomp_mm.pretrain import PompPretrainer
    cfg = siglip[0]
    torch.manual_seed(0)
    pre = PompPretrainer(clip_model=cfg, vocabulary=NAMES, n_ctx=4, num_sampled=3)
    ctx = pre.text_encoder.prompt_learner.ctx
    assert [n for n, p in pre.named_parameters() if p.requires_grad] == \
        ['text_encoder.prompt_learner.ctx']
    images, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 2, 5])
    opt = torch.optim.SGD([ctx], lr=1.0)
    out = pre(inputs=images, labels=labels)
    assert torch.isfinite(out['loss'])
    out['loss'].backward()
    assert ctx.grad.abs().sum() > 0
    before = ctx.detach().clone()
    opt.step()
    assert not torch.equal(ctx.detach(), before)
    assert pre.prompt_metadata()['class_token_position'] == 'end'


def test_class_specific_context(siglip):
    """One context per class, each initialised from the same words: still the hand prompt."""
    enc = _encoder(siglip, ctx_init='a photo of a', class_specific=True)
    assert enc.prompt_learner.ctx.dim() == 3
    with torch.no_grad():
        ours = enc.encode_text(NAMES)
    assert (ours - _reference(siglip, [f'a photo of a {n}.' for n in NAMES])).abs().max() < 1e-5


@pytest.mark.parametrize('text,match', [
    (dict(pool_type='argmax'), "no causal attention mask and pools at 'argmax'"),
    (dict(no_causal_mask=False), "causal text tower pooled at the last position"),
    ('use_pad_mask', 'mask padding'),
], ids=['bidirectional-argmax', 'causal-last', 'pad-mask'])
def test_towers_pomp_cannot_prompt_are_refused(siglip_tokenizer_folder, text, match):
    from pomp_mm.clip import build_clip
    from pomp_mm.testing import tiny_siglip_config
    from pomp_mm.towers import build_text_tower
    pad_mask = text == 'use_pad_mask'  # not a config key: open_clip's TextTransformer argument
    clip = build_clip(tiny_siglip_config(siglip_tokenizer_folder, **({} if pad_mask else text)))
    clip.text.use_pad_mask = pad_mask
    with pytest.raises(TypeError, match=match):
        build_text_tower(clip)
