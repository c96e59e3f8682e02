import logging
import os

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_same_embeddings_and_grads
from pomp_mm import PompTextEncoder
from pomp_mm.clip import clip_config
from pomp_mm.vocabulary import parse_vocabulary

NAMES = ['cat', 'golden retriever', 'bow (weapon)', 'traffic light', 'hot-air balloon']


def _reference(clip, tok, texts):
    with torch.no_grad():
        return clip.encode_text(tok(texts), normalize=True)


@pytest.mark.parametrize('position,text', [
    ('end', 'a photo of a {}.'),
    ('front', '{} a photo of a.'),
    ('middle', 'a photo {} of a.'),
])
def test_ctx_from_words_matches_open_clip(make_encoder, reference_clip, position, text):
    # CLIP's BPE merges a name's closing punctuation with the final '.', so for 'front' and
    # 'middle' (as in CoOp) only names ending in a letter have a plain-text equivalent.
    names = NAMES if position == 'end' else [n for n in NAMES if n[-1].isalpha()]
    enc = make_encoder(ctx_init='a photo of a', class_token_position=position)
    with torch.no_grad():
        got = enc.encode_text(names)
    clip, tok = reference_clip()
    ref = _reference(clip, tok, [text.format(n) for n in names])
    assert got.shape == (len(names), 32)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_middle_with_an_odd_context_splits_as_coop(make_encoder, reference_clip):
    """n_ctx 5 in the middle: the first n_ctx // 2 = 2 context tokens, the name, the other 3
    (CoOp's split), equal to open_clip's encoding of that text."""
    names = [n for n in NAMES if n[-1].isalpha()]
    enc = make_encoder(ctx_init='a bright photo of a', class_token_position='middle')
    assert enc.prompt_learner.ctx.shape[0] == 5
    with torch.no_grad():
        got = enc.encode_text(names)
    clip, tok = reference_clip()
    ref = _reference(clip, tok, [f'a bright {n} photo of a.' for n in names])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_templates_baseline_matches_open_clip_ensemble(make_encoder, reference_clip):
    templates = ['a photo of a {}.', 'a drawing of the {}.', 'itap of a {}.']
    enc = make_encoder(templates=templates)
    with torch.no_grad():
        got = enc.encode_text(NAMES)
    clip, tok = reference_clip()
    ref = sum(_reference(clip, tok, [t.format(n) for n in NAMES]) for t in templates)
    torch.testing.assert_close(got, F.normalize(ref, dim=-1), atol=1e-5, rtol=0)


@pytest.mark.parametrize('n_ctx', [4, 16])
@pytest.mark.parametrize('position', ['end', 'middle', 'front'])
def test_truncated_equals_full_context(make_encoder, n_ctx, position):
    enc = make_encoder(n_ctx=n_ctx, class_token_position=position, chunk_size=2)
    with torch.no_grad():
        enc.truncate = True
        short = enc.encode_text(NAMES)
        enc.truncate = False
        full = enc.encode_text(NAMES)
    assert (short - full).abs().max() <= 1e-5
    # The prompt matters: a random context differs from the hand prompt.
    assert not torch.allclose(short, make_encoder(templates='single').encode_text(NAMES),
                              atol=1e-3)


def test_gradients_reach_ctx_only(make_encoder):
    enc = make_encoder(n_ctx=4, prompt_trainable=True, cat_bg=True).train()
    emb = enc.encode_text(NAMES)
    assert emb.requires_grad
    (emb[:, 0].sum() + emb[1].pow(2).sum()).backward()
    grads = {n: p.grad for n, p in enc.named_parameters() if p.grad is not None}
    assert list(grads) == ['prompt_learner.ctx']
    # the same gradient as running every prompt whole (an independent path)
    whole = make_encoder(n_ctx=4, prompt_trainable=True, cat_bg=True, share_prefix=False).train()
    whole.prompt_learner.ctx.data.copy_(enc.prompt_learner.ctx.data)
    ref = whole.encode_text(NAMES)
    (ref[:, 0].sum() + ref[1].pow(2).sum()).backward()
    want = whole.prompt_learner.ctx.grad
    assert want.abs().max() > 0
    torch.testing.assert_close(grads['prompt_learner.ctx'], want,
                               atol=1e-4 * want.abs().max().item(), rtol=0)
    trainable = sorted(n for n, p in enc.named_parameters() if p.requires_grad)
    assert trainable == ['bg_embed', 'prompt_learner.ctx']


def test_chunking_and_sorting_keep_row_order(make_encoder):
    enc = make_encoder(n_ctx=4)
    with torch.no_grad():
        one = torch.cat([enc.encode_text([n]) for n in NAMES])
        enc.chunk_size = 2
        chunked = enc.encode_text(NAMES)
    torch.testing.assert_close(chunked, one, atol=1e-5, rtol=0)


def test_class_specific_context(make_encoder):
    enc = make_encoder(n_ctx=2, class_specific=True, vocabulary=['cat', 'dog', 'car'])
    assert enc.prompt_learner.ctx.shape == (3, 2, 64)
    with torch.no_grad():
        enc.prompt_learner.ctx[1].zero_()
        both = enc.encode_text(['dog', 'cat'])
        single = enc.encode_text(['cat'])
    torch.testing.assert_close(both[1:], single, atol=1e-6, rtol=0)
    with pytest.raises(KeyError, match='horse'):
        enc.encode_text(['horse'])


def test_class_specific_context_of_repeated_names(make_encoder):
    """Built-in vocabularies repeat names (imagenet1k: 'missile'); each class keeps its row."""
    vocab = ['missile', 'dog', 'missile']
    enc = make_encoder(n_ctx=2, class_specific=True, vocabulary=vocab, cat_bg=False)
    alone = make_encoder(n_ctx=2, class_specific=True, vocabulary=['missile'], cat_bg=False)
    with torch.no_grad():
        for row in (0, 2):
            alone.prompt_learner.ctx.copy_(enc.prompt_learner.ctx[row:row + 1])
            torch.testing.assert_close(enc.encode_text(vocab)[row],
                                       alone.encode_text(['missile'])[0], atol=1e-6, rtol=0)
        assert not torch.allclose(enc()[0], enc()[2])
    with pytest.raises(ValueError, match=r"'missile' names classes \[0, 2\]"):
        enc.encode_text(['missile', 'dog'])


def test_forward_contract_like_mmseg(make_encoder):
    enc = make_encoder(n_ctx=4, vocabulary=['cat', 'dog', 'car'], cat_bg=True)
    enc.init_weights()
    out = enc()
    scale = enc.tower.logit_scale.exp()
    assert out.shape == (4, 32)
    torch.testing.assert_close(out.norm(dim=-1), scale.expand(4), atol=1e-4, rtol=0)
    with torch.no_grad():
        ref = enc.encode_text(['cat', 'dog', 'car'])
    # rows are renormalised after the background row is appended: real rows keep their value
    torch.testing.assert_close(out[:3] / scale, ref, atol=1e-5, rtol=0)
    enc.set_vocabulary('sofa . window')
    assert enc().shape == (3, 32)


def test_forward_cache_follows_prompt_updates(make_encoder):
    enc = make_encoder(n_ctx=4, vocabulary=['cat', 'dog'], prompt_trainable=True)
    with torch.no_grad():
        before = enc().clone()
        again = enc()
        assert torch.equal(before, again)
        enc.prompt_learner.ctx.add_(0.5)  # what an optimizer step does
        after = enc()
    assert not torch.allclose(before, after)


def test_forward_cache_sees_updates_that_keep_the_version(make_encoder):
    """Fused optimizers and ``.data`` writes change ctx without bumping its version."""
    enc = make_encoder(n_ctx=4, vocabulary=['cat', 'dog'], prompt_trainable=True, cat_bg=False)
    with torch.no_grad():
        before = enc().clone()
        version = enc.prompt_learner.ctx._version
        enc.prompt_learner.ctx.data.add_(0.5)
        assert enc.prompt_learner.ctx._version == version
        after = enc()
        fresh = enc.tower.logit_scale.exp() * enc.encode_text(['cat', 'dog'])
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, fresh, atol=1e-6, rtol=0)


def test_forward_cache_of_a_frozen_prompt(make_encoder):
    """Frozen ctx: in-place edits still refresh the table, and so does making it trainable
    later (then compared by value)."""
    enc = make_encoder(n_ctx=4, vocabulary=['cat', 'dog'], cat_bg=False)
    with torch.no_grad():
        before = enc().clone()
        enc.prompt_learner.ctx.mul_(2.0)
        edited = enc().clone()
        fresh = enc.tower.logit_scale.exp() * enc.encode_text(['cat', 'dog'])
        enc.set_prompt_trainable(True)
        enc.prompt_learner.ctx.data.add_(0.5)
        trained = enc()
    assert not torch.allclose(before, edited)
    torch.testing.assert_close(edited, fresh, atol=1e-6, rtol=0)
    assert not torch.allclose(edited, trained)


@pytest.mark.parametrize('prompt', [False, True])
def test_loading_new_weights_drops_cached_tables(make_encoder, tmp_path, prompt):
    """A checkpoint load (new tower weights or prompt) must not serve tables of the old ones,
    from memory or from the disk cache."""
    kwargs = dict(n_ctx=4) if prompt else dict(templates='single')
    enc = make_encoder(seed=0, cache_dir=str(tmp_path), **kwargs)
    other = make_encoder(seed=1, **kwargs)
    with torch.no_grad():
        stale = enc().clone()
        enc.load_state_dict(other.state_dict())
        got = enc()
        want = other()
    assert not torch.allclose(stale, want)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert enc.tower.fingerprint() == other.tower.fingerprint()


def test_cached_tables_ignore_the_callers_autocast(make_encoder, tmp_path):
    """The first call may come from an AMP train step: the kept table is still full precision."""
    enc = make_encoder(n_ctx=4, vocabulary=NAMES, cache_dir=str(tmp_path))
    ref = make_encoder(n_ctx=4, vocabulary=NAMES)
    with torch.no_grad():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            amp = enc()
            low = enc.tower.encode_tokens(enc.tokenizer(NAMES))  # what autocast would give
        full = ref()
        exact = ref.tower.encode_tokens(ref.tokenizer(NAMES))
    assert (low.float() - exact).abs().max() > 1e-4  # autocast really is lower precision here
    torch.testing.assert_close(amp, full, atol=1e-6, rtol=0)
    with torch.no_grad():  # and the disk cache holds the full-precision table
        torch.testing.assert_close(make_encoder(n_ctx=4, vocabulary=NAMES,
                                                cache_dir=str(tmp_path))(), full, atol=1e-6,
                                   rtol=0)


def test_dataset_name_builtin(make_encoder, reference_clip):
    """A built-in dataset's names through the default templates, plus the background row
    (cat_bg by default, as mmseg's encoder), scaled as CLIPTextEncoder's output."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    from pomp_mm import get_templates
    enc = make_encoder(vocabulary=None, dataset_name='imagenet1k', chunk_size=512)
    assert enc.num_classes == 1000
    with torch.no_grad():
        table = enc()
    assert table.shape == (1000 + 1, 32)
    clip, tok = reference_clip()
    scale = clip.logit_scale.exp()
    for i in (0, 417, 999):  # the template-ensemble mean of open_clip's own encoding
        texts = [t.format(IMAGENET_CLASSNAMES[i]) for t in get_templates('vild')]
        ref = torch.nn.functional.normalize(_reference(clip, tok, texts).mean(0), dim=0)
        torch.testing.assert_close(table[i], scale * ref, atol=1e-4, rtol=0)
    bg = torch.nn.functional.normalize(enc.bg_embed.detach().float(), dim=-1)[0]
    torch.testing.assert_close(table[-1], scale * bg, atol=1e-5, rtol=0)


def test_disk_cache_second_call_is_a_file_read(make_encoder, tmp_path, monkeypatch):
    enc = make_encoder(n_ctx=4, cache_dir=str(tmp_path))
    with torch.no_grad():
        first = enc.encode_text(NAMES)
    files = list((tmp_path / 'embeddings').glob('*.pt'))
    assert len(files) == 1
    assert enc.cache_file(parse_vocabulary(NAMES).names) == str(files[0])
    assert enc.cache_file(['other']) != str(files[0])
    assert make_encoder(n_ctx=4).cache_file(NAMES) is None
    fresh = make_encoder(n_ctx=4, cache_dir=str(tmp_path))
    fresh.prompt_learner.load_state_dict(enc.prompt_learner.state_dict())

    def boom(*a, **k):
        raise AssertionError('the text tower ran on a cache hit')

    monkeypatch.setattr(fresh.tower, 'forward', boom)
    with torch.no_grad():
        second = fresh.encode_text(NAMES)
    torch.testing.assert_close(second, first, atol=0, rtol=0)
    # another prompt, other names or other weights are other keys
    with torch.no_grad():
        enc.encode_text(NAMES[:2])
        make_encoder(seed=1, n_ctx=4, cache_dir=str(tmp_path)).encode_text(NAMES)
    assert len(list((tmp_path / 'embeddings').glob('*.pt'))) == 3


# ------------------------------------------------------------------ bad input
def test_empty_vocabulary(make_encoder):
    with pytest.raises(ValueError, match='empty'):
        make_encoder(vocabulary=[])
    enc = make_encoder()
    with pytest.raises(ValueError, match='empty'):
        enc.encode_text([])


def test_duplicates_are_warned_and_kept(make_encoder, caplog):
    enc = make_encoder(n_ctx=4)
    with caplog.at_level(logging.WARNING):
        with torch.no_grad():
            emb = enc.encode_text(['cat', 'dog', 'cat'])
    assert "'cat' (classes 0 and 2)" in caplog.text
    assert emb.shape[0] == 3
    torch.testing.assert_close(emb[0], emb[2])


def test_too_long_name_names_class_and_token_count(make_encoder):
    enc = make_encoder(n_ctx=16)
    long_name = ' '.join(['giraffe'] * 60)
    with pytest.raises(ValueError, match=r"'giraffe giraffe.*' has 79 tokens.*context length 77"):
        enc.encode_text(['cat', long_name])
    base = make_encoder(templates='single')
    with pytest.raises(ValueError, match=r'has 81 tokens'):
        base.encode_text([' '.join(['giraffe'] * 74)])


def test_a_template_text_that_fills_the_context_exactly_fits(make_encoder):
    """Texts are tokenized once; only rows ending in the last slot are counted again, so the
    boundary (77 tokens fit, 78 do not) must hold."""
    enc = make_encoder(templates=['{}'])
    fits = ' '.join(['giraffe'] * 75)  # 75 name tokens + SOS + EOT = 77
    with torch.no_grad():
        got = enc.encode_text(['cat', fits])
        want = enc.tower.encode_tokens(enc.tokenizer(['cat', fits]))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"'giraffe.*' \('\{\}'\) has 78 tokens"):
        enc.encode_text(['cat', fits + ' giraffe'])


def test_vocabulary_and_dataset_name_exclusive():
    with pytest.raises(ValueError, match='exactly one of vocabulary and dataset_name'):
        PompTextEncoder(clip_model='tiny', vocabulary=['cat'], dataset_name='voc')
    with pytest.raises(ValueError, match='exactly one of vocabulary and dataset_name'):
        PompTextEncoder(clip_model='tiny')


def test_unknown_dataset_name_lists_known():
    with pytest.raises(KeyError,
                       match=r"unknown built-in vocabulary 'pascal'; known: .*imagenet21k"):
        PompTextEncoder(clip_model='tiny', dataset_name='pascal')


def test_prompt_with_n_ctx_is_rejected(make_encoder, tmp_path):
    with pytest.raises(ValueError, match='brings its own context'):
        make_encoder(prompt=str(tmp_path / 'p.pth'), n_ctx=4)


def test_unknown_model_and_missing_weights(tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Q-99'"):
        PompTextEncoder(clip_model='ViT-Q-99', vocabulary=['cat'])
    missing = str(tmp_path / 'nope.pt')
    with pytest.raises(FileNotFoundError, match='nope.pt'):
        PompTextEncoder(clip_model='tiny', pretrained=missing, vocabulary=['cat'])


@pytest.mark.parametrize('n_ctx,chunk_size', [(1, 3), (4, 3), (16, 3), (4, 1024)])
def test_shared_prefix_equals_per_class_prompts(make_encoder, n_ctx, chunk_size):
    """The [SOS, ctx] positions run once per chunk and names of different lengths are packed
    unpadded, with the same embeddings and the same gradient to ctx as running every class's
    whole prompt."""
    shared = make_encoder(n_ctx=n_ctx, prompt_trainable=True, chunk_size=chunk_size)
    plain = make_encoder(n_ctx=n_ctx, prompt_trainable=True, chunk_size=chunk_size,
                         share_prefix=False)
    plain.load_state_dict(shared.state_dict())
    assert shared.tower.shares_prefix
    # the reference really runs whole prompts through the blocks' own forward, which the
    # shared path never calls (it runs their parts on prefix and packed suffixes)
    seen = {id(shared): [], id(plain): []}
    hooks = [e.tower.transformer.resblocks[0].register_forward_hook(
        lambda m, args, out, key=id(e): seen[key].append(tuple(args[0].shape)))
        for e in (shared, plain)]
    assert_same_embeddings_and_grads(shared, plain, NAMES)
    for h in hooks:
        h.remove()
    assert seen[id(shared)] == []
    assert seen[id(plain)] and all(len(shape) == 3 and shape[1] > n_ctx + 2
                                   for shape in seen[id(plain)])


@pytest.mark.parametrize('truncate,pack', [(True, True), (True, False), (False, True)])
def test_shared_prefix_runs_no_padding(make_encoder, truncate, pack):
    """Packed, every position the blocks see is the shared prefix (once) or a real token of
    some class: a step's cost follows the sum of name lengths, not count x longest name.
    Unpacked (``attention='padded'``), own tokens pad to the longest; untruncated, to 77."""
    enc = make_encoder(n_ctx=4, chunk_size=1024, truncate=truncate,
                       attention='grouped' if pack else 'padded')
    rows = []
    hook = enc.tower.transformer.resblocks[0].mlp.register_forward_hook(
        lambda m, args, out: rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    names = NAMES + ['a', 'a much longer class name than all the others']
    with torch.no_grad():
        emb = enc.encode_text(names)
    hook.remove()
    batch = enc.prompt_learner.tokenize(names, enc.tokenizer, enc.tower.context_length)
    assert len({int(e) for e in batch.eot}) > 3  # several lengths in one chunk
    prefix = 4 + 1
    if truncate and pack:
        own = int((batch.eot + 1 - prefix).sum())
    elif truncate:
        own = len(names) * (int(batch.eot.max()) + 1 - prefix)
    else:
        own = len(names) * (enc.tower.context_length - prefix)
    assert sorted(rows) == [prefix, own]
    plain = make_encoder(n_ctx=4, share_prefix=False)
    plain.load_state_dict(enc.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(emb, plain.encode_text(names), atol=1e-5, rtol=0)


def test_shared_prefix_only_where_prompts_share_one(make_encoder):
    emb = torch.randn(3, 10, 64)
    assert make_encoder(n_ctx=4).prompt_learner.split_shared_prefix(emb) is not None
    for kwargs in (dict(class_token_position='middle'), dict(class_token_position='front'),
                   dict(class_specific=True)):
        enc = make_encoder(n_ctx=4, **kwargs)
        assert enc.prompt_learner.split_shared_prefix(emb) is None, kwargs


def test_unknown_blocks_fall_back_to_whole_prompts(make_encoder):
    from torch import nn

    from pomp_mm.shared_prefix import supports_shared_prefix
    enc = make_encoder(n_ctx=4)
    with torch.no_grad():
        before = enc.encode_text(NAMES)

    class Wrapped(nn.Module):  # a block type the shared path does not know
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x, attn_mask=None):
            return self.block(x, attn_mask=attn_mask)

        def get_weight_dtype(self):
            return self.block.get_weight_dtype()

    blocks = enc.tower.transformer.resblocks
    blocks[0] = Wrapped(blocks[0])
    assert not supports_shared_prefix(enc.tower.transformer)
    enc.tower._shares_prefix = None
    enc._memo.clear()
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_text(NAMES), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize('name,tag,quick', [
    ('ViT-B-16', 'openai', True),  # open_clip 3 only warns here: we must force it
    ('ViT-B-16', 'laion2b_s34b_b88k', False),
    ('ViT-B-16-quickgelu', 'metaclip_400m', True),
])
def test_named_weights_get_the_activation_they_were_trained_with(monkeypatch, name,
                                                                 tag, quick):
    import open_clip

    from pomp_mm.clip import build_clip
    seen = {}

    def fake_create_model(model_name, pretrained=None, force_quick_gelu=False, **kwargs):
        seen.update(name=model_name, pretrained=pretrained, quick=force_quick_gelu)
        return open_clip.CLIP(**dict(clip_config('tiny'), quick_gelu=force_quick_gelu))

    monkeypatch.setattr(open_clip, 'create_model', fake_create_model)
    build_clip(name, tag)
    assert seen == dict(name=name, pretrained=tag, quick=quick)


def test_mmseg_format_weights_run_with_quick_gelu(tmp_path, caplog):
    """mmseg's CLIPTextEncoder is OpenAI CLIP (QuickGELU): its weights get that activation even
    when the model config forgets it, and caches cannot confuse the two activations."""
    from open_clip.transformer import QuickGELU

    from pomp_mm.clip import build_clip, mmseg_text_state_dict
    torch.manual_seed(0)
    source = build_clip(dict(clip_config('tiny'), quick_gelu=True))
    # write it in mmseg's layout (the inverse of mmseg_text_state_dict's key map)
    from pomp_mm.clip import _MMSEG_LAYER_KEYS
    back = {v: k for k, v in _MMSEG_LAYER_KEYS.items()}
    state = {}
    for key, value in source.state_dict().items():
        if key.startswith('visual.'):
            continue
        if key.startswith('transformer.resblocks.'):
            _, _, index, rest = key.split('.', 3)
            key = f'transformer.{index}.{back[rest]}'
        state['text_encoder.' + key] = value
    assert len(mmseg_text_state_dict(state)) == len(state)
    path = str(tmp_path / 'san_clip.pth')
    torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger='pomp_mm.clip'):
        enc = PompTextEncoder(clip_model=clip_config('tiny'), pretrained=path, vocabulary=NAMES,
                              templates='single', cat_bg=False)
    assert 'quick_gelu=True' in caplog.text  # a config dict that says GELU is overruled, loudly
    assert any(isinstance(m, QuickGELU) for m in enc.tower.transformer.modules())
    named = PompTextEncoder(clip_model='tiny', pretrained=path, vocabulary=NAMES,
                            templates='single', cat_bg=False)
    assert any(isinstance(m, QuickGELU) for m in named.tower.transformer.modules())
    ref = PompTextEncoder(clip_model=dict(clip_config('tiny'), quick_gelu=True), clip_module=source,
                          vocabulary=NAMES, templates='single', cat_bg=False)
    with torch.no_grad():
        for built in (enc, named):
            torch.testing.assert_close(built.encode_text(NAMES), ref.encode_text(NAMES),
                                       atol=1e-6, rtol=0)
    gelu = build_clip('tiny')
    gelu.load_state_dict(source.state_dict())
    assert PompTextEncoder(clip_model='tiny', clip_module=gelu, vocabulary=NAMES,
                           cat_bg=False).tower.fingerprint() != enc.tower.fingerprint()


def test_prompts_need_no_mmseg(make_encoder, monkeypatch):
    """The core runs without mmseg: only the 'vild' templates (mmseg's) import it, on use."""
    import sys
    for name in [m for m in sys.modules if m == 'mmseg' or m.startswith('mmseg.')]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, 'mmseg', None)  # import mmseg -> ImportError
    with torch.no_grad():
        assert make_encoder(n_ctx=4).encode_text(NAMES).shape == (len(NAMES), 32)
        assert make_encoder(templates='single').encode_text(NAMES).shape == (len(NAMES), 32)
        with pytest.raises(ImportError, match="templates='vild' are mmseg's"):
            make_encoder().encode_text(NAMES)


@pytest.mark.parametrize('content', [
    b'not a torch file',  # half-written / foreign
    {'names': ['cat']},  # no table
    [1, 2, 3],  # not a dict
    {'names': ['cat', 'dog'], 'embeddings': torch.zeros(3, 32)},  # wrong row count
])
def test_bad_disk_cache_entries_are_misses(tmp_path, caplog, content):
    from pomp_mm.embedding_cache import EmbeddingCache
    cache = EmbeddingCache(str(tmp_path))
    key = EmbeddingCache.key(['cat', 'dog'], model='m', weights='w', prompt='p')
    path = cache.path(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(content, bytes):
        with open(path, 'wb') as f:
            f.write(content)
    else:
        torch.save(content, path)
    with caplog.at_level(logging.WARNING):
        assert cache.get(key, ['cat', 'dog']) is None
    assert 'embedding cache entry' in caplog.text
    table = torch.randn(2, 32)
    cache.put(key, ['cat', 'dog'], table)
    assert torch.equal(cache.get(key, ['cat', 'dog']), table)


def test_ctx_init_in_coop_spelling_is_the_same_four_tokens(make_encoder):
    """CoOp configs write ctx_init as 'a_photo_of_a': the same 4 context tokens as the words
    (read literally, the underscores would make 7 BPE tokens)."""
    words = make_encoder(ctx_init='a photo of a')
    coop = make_encoder(ctx_init='a_photo_of_a')
    assert coop.prompt_learner.ctx.shape[0] == 4
    torch.testing.assert_close(coop.prompt_learner.ctx, words.prompt_learner.ctx)


def test_disk_cache_keys_on_the_prompt_and_its_class_token_position(make_encoder, tmp_path):
    """Same CLIP, same names, same context vectors: a prompt read at another class-token
    position is another prompt, and a new prompt never gets the old one's cached table."""
    from pomp_mm import save_prompt
    names = ['cat', 'dog', 'traffic light']
    ctx = torch.randn(4, 64, generator=torch.Generator().manual_seed(1)) * 0.02
    end = save_prompt(str(tmp_path / 'end.pth'), ctx, class_token_position='end')
    front = save_prompt(str(tmp_path / 'front.pth'), ctx, class_token_position='front')
    other = save_prompt(str(tmp_path / 'other.pth'), ctx + 0.05, class_token_position='end')
    cache = str(tmp_path / 'cache')
    tables, prints = {}, {}
    for name, path in (('end', end), ('front', front), ('other', other)):
        enc = make_encoder(prompt=path, cache_dir=cache, cat_bg=False)
        with torch.no_grad():
            tables[name] = enc.encode_text(names)
            uncached = make_encoder(prompt=path, cat_bg=False).encode_text(names)
        torch.testing.assert_close(tables[name], uncached)  # the cache served its own table
        prints[name] = enc.prompt_fingerprint()
    assert len(set(prints.values())) == 3
    assert not torch.allclose(tables['end'], tables['front'])
    assert not torch.allclose(tables['end'], tables['other'])


def test_rows_come_back_in_input_order_with_gradients_on(make_encoder):
    """The packed path groups prompts by length; under grad (pre-training) as without it, row i
    is names[i]: against the no-grad result and against running every prompt whole."""
    names = ['traffic light', 'cat', 'a rather long name of a class', 'dog', 'sea lion pup']
    enc = make_encoder(n_ctx=4, prompt_trainable=True, cat_bg=False)
    whole = make_encoder(n_ctx=4, prompt_trainable=True, cat_bg=False, share_prefix=False)
    whole.prompt_learner.ctx.data.copy_(enc.prompt_learner.ctx.data)
    with torch.enable_grad():
        packed = enc.encode_names(names)
        reference = whole.encode_names(names)
    assert packed.requires_grad
    with torch.no_grad():
        plain = enc.encode_names(names)
    torch.testing.assert_close(packed.detach(), plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(packed.detach(), reference.detach(), atol=1e-5, rtol=0)
    single = torch.stack([enc.encode_names([n])[0] for n in names]).detach()
    torch.testing.assert_close(packed.detach(), single, atol=1e-5, rtol=0)


@pytest.mark.parametrize('pack', [True, False])
def test_tower_forward_prefixed_equals_whole_sequences_in_input_order(make_encoder, pack):
    """The tower's shared-prefix path, given sequences of mixed length in no particular order,
    returns what the whole-sequence forward gives, row for row."""
    tower = make_encoder(n_ctx=3).tower
    gen = torch.Generator().manual_seed(0)
    p, s, width = 4, 6, tower.width
    prefix = torch.randn(p, width, generator=gen) * 0.1
    suffix = torch.randn(5, s, width, generator=gen) * 0.1
    eot = torch.tensor([7, 4, 9, 4, 6])  # unsorted, two of equal length
    with torch.no_grad():
        got = tower.forward_prefixed(prefix, suffix, eot, pack=pack)
        want = tower(torch.cat([prefix.expand(5, -1, -1), suffix], dim=1), eot)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_table_memo_is_stale_after_any_change_of_its_inputs(make_encoder):
    from pomp_mm.embedding_cache import TableMemo
    from pomp_mm.vocabulary import parse_vocabulary
    learner = make_encoder(n_ctx=2, prompt_trainable=True).prompt_learner
    vocab, other = parse_vocabulary(['a', 'b']), parse_vocabulary(['a', 'b'])
    memo, table, cpu = TableMemo(), torch.ones(2, 3), torch.device('cpu')
    memo.put(vocab, learner, cpu, table)
    assert memo.get(vocab, learner, cpu) is not None
    assert memo.get(other, learner, cpu) is None  # another vocabulary object
    assert memo.get(vocab, None, cpu) is None
    learner.ctx.data.add_(1.0)  # a trainable context changed without a version bump
    assert memo.get(vocab, learner, cpu) is None
    learner.ctx.requires_grad_(False)
    memo.put(vocab, learner, cpu, table)
    assert memo.get(vocab, learner, cpu) is not None
    with torch.no_grad():
        learner.ctx.mul_(2.0)  # a frozen one: in-place writes bump its version
    assert memo.get(vocab, learner, cpu) is None
    memo.put(vocab, None, cpu, table)  # templates: valid while the vocabulary is the same
    assert torch.equal(memo.get(vocab, None, cpu), table)
    memo.clear()
    assert memo.get(vocab, None, cpu) is None
