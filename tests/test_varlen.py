"""The one-attention-call-per-layer text path (pomp_mm.varlen), its token table, and what a
pre-training step dispatches."""
import functools
import warnings

import pytest
import torch
import torch.nn.functional as F

from pomp_mm.varlen import PackedLayout, packed_transformer

# a 12-layer tower, narrow: kernel counts depend on the layer count, not on the width
DEEP_CLIP = dict(embed_dim=32, vision_cfg=dict(image_size=32, layers=1, width=64, patch_size=16),
                 text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=4,
                               layers=12))


@functools.lru_cache(maxsize=None)
def _imagenet21k():
    from pomp_mm.vocabulary import load_vocabulary
    return load_vocabulary('imagenet21k')


@functools.lru_cache(maxsize=None)
def _every_length(per_length: int = 3):
    """ImageNet-21K names covering every prompt length of the vocabulary (``per_length`` each,
    the longest names included), plus 200 drawn at random."""
    from open_clip.tokenizer import SimpleTokenizer
    tok = SimpleTokenizer()
    names = list(_imagenet21k().names)
    by_len = {}
    for name in names:
        by_len.setdefault(len(tok.encode(name + '.')), []).append(name)
    picked = [n for length in sorted(by_len) for n in by_len[length][:per_length]]
    gen = torch.Generator().manual_seed(0)
    picked += [names[i] for i in torch.randperm(len(names), generator=gen)[:200].tolist()]
    return picked, sorted(by_len)


# ------------------------------------------------------------------------------ the layout
def test_layout_indices_by_hand():
    lay = PackedLayout.build(torch.tensor([1, 3]), prefix_len=2, device=torch.device('cpu'),
                             varlen=True, source_width=6, token_bucket=8, length_bucket=4,
                             seq_bucket=4)
    # rows: prefix 0-1, class 0 at 2, class 1 at 3-5, padding 6-7
    assert (lay.rows, lay.tokens, lay.max_len, lay.padded_seqs) == (8, 4, 4, 4)
    assert lay.positions.tolist() == [0, 1, 2, 2, 3, 4, 2, 2]
    assert lay.last.tolist() == [2, 5]
    # slots: the prefix's own sequence, class 0, class 1, one empty sequence; S = 4
    assert lay.q_rows.view(4, 4).tolist() == [[0, 1, 0, 0], [2, 0, 0, 0], [3, 4, 5, 0],
                                              [0, 0, 0, 0]]
    assert lay.k_rows.view(4, 6)[:, :2].tolist() == [[0, 1]] * 4
    assert lay.out_slots.tolist() == [0, 1, 4, 8, 9, 10, 0, 0]
    assert lay.mask is None  # the flash kernel masks by sequence: none is built or copied
    mask = PackedLayout.build(torch.tensor([1, 3]), prefix_len=2, device=torch.device('cpu'),
                              token_bucket=8, length_bucket=4, seq_bucket=4).mask[:, 0]
    assert mask[0, 1].tolist() == [True, True, False, False, False, False]  # prefix: causal
    assert mask[1, 0].tolist() == [True, True, True, False, False, False]
    assert mask[2, 2].tolist() == [True, True, True, True, True, False]
    assert mask[2, 3].tolist() == [True, True, True, True, True, False]  # padded query
    assert mask[3].any(-1).all()  # no row without a key: no NaN through softmax
    assert lay.source_rows.tolist() == [2, 8, 9, 10, 2, 2]
    # the varlen kernel's view: prefix, class 0, class 1, padding tail
    assert lay.cu_seq_q.tolist() == [0, 2, 3, 6, 8]
    assert lay.cu_seq_k.tolist() == [0, 2, 5, 10, 12]
    assert lay.key_rows.tolist() == [0, 1, 0, 1, 2, 0, 1, 3, 4, 5, 6, 7]
    assert (lay.max_q, lay.max_k) == (3, 5)


def test_layout_rejects_empty_sequences():
    with pytest.raises(ValueError, match=r'at least one own token, got lengths \[0\]'):
        PackedLayout.build(torch.tensor([2, 0]), 1, torch.device('cpu'))


def _varlen_reference(q, k, v, lay):
    """What flash's varlen kernel computes from the layout's varlen view (causal aligned to
    the end of each sequence's keys), one sequence at a time."""
    k, v = k[lay.key_rows], v[lay.key_rows]
    outs = []
    cq, ck = lay.cu_seq_q.tolist(), lay.cu_seq_k.tolist()
    for a, b, c, d in zip(cq[:-1], cq[1:], ck[:-1], ck[1:]):
        nq, nk = b - a, d - c
        mask = torch.ones(nq, nk, dtype=torch.bool).tril(nk - nq)
        outs.append(F.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), k[c:d].transpose(0, 1), v[c:d].transpose(0, 1),
            attn_mask=mask).transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize('prefix_len', [0, 3])
def test_padded_path_equals_the_varlen_kernels_view(prefix_len):
    """The CPU path and the CUDA kernel's view of one layout attend alike (checked on the CPU
    against a per-sequence loop), so the indices the GPU uses are tested here too."""
    from pomp_mm.varlen import _padded_attention
    lengths = torch.tensor([1, 4, 2, 7, 3])
    lay = PackedLayout.build(lengths, prefix_len, torch.device('cpu'), varlen=True,
                             token_bucket=16)
    padded = PackedLayout.build(lengths, prefix_len, torch.device('cpu'), token_bucket=16)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(lay.rows, 2, 8, generator=gen) for _ in range(3))
    real = slice(0, prefix_len + int(lengths.sum()))  # padding rows: anything finite
    got = _padded_attention(q, k, v, padded)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[real], _varlen_reference(q, k, v, lay)[real],
                               atol=1e-6, rtol=0)


def test_packed_transformer_equals_each_sequence_alone(make_encoder):
    tower = make_encoder(n_ctx=4).tower
    gen = torch.Generator().manual_seed(0)
    prefix, lengths = 3, [2, 5, 1]
    seqs = [torch.randn(prefix + n, 64, generator=gen) for n in lengths]
    seqs = [torch.cat([seqs[0][:prefix], s[prefix:]]) for s in seqs]  # one shared prefix
    lay = PackedLayout.build(torch.tensor(lengths), prefix, torch.device('cpu'))
    x = torch.zeros(lay.rows, 64)
    x[:prefix + sum(lengths)] = torch.cat([seqs[0][:prefix]] + [s[prefix:] for s in seqs])
    with torch.no_grad():
        got = packed_transformer(tower.transformer, x, lay)[lay.last]
        for s, row in zip(seqs, got):
            mask = tower.attn_mask[:len(s), :len(s)]
            want = tower.transformer(s[None], attn_mask=mask)[0, -1]
            torch.testing.assert_close(row, want, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ exactness
def _pair(make_encoder, names, **kwargs):
    kwargs.setdefault('n_ctx', 4)
    a = make_encoder(vocabulary=names, prompt_trainable=True, cat_bg=False,
                     attention='grouped', chunk_size=4096, **kwargs)
    b = make_encoder(vocabulary=names, prompt_trainable=True, cat_bg=False,
                     attention='varlen', chunk_size=4096, **kwargs)
    b.load_state_dict(a.state_dict())
    return a, b


def _assert_same(a, b, names, atol=1e-5, grad_rtol=1e-5):
    """Same embeddings (``atol``) and the same ``ctx`` gradient (to ``grad_rtol`` of its
    largest entry) for a fixed random weighting of the embeddings."""
    ea, eb = a.encode_names(names), b.encode_names(names)
    torch.testing.assert_close(eb, ea, atol=atol, rtol=0)
    weights = torch.randn(ea.shape, generator=torch.Generator().manual_seed(0))
    (ea * weights).sum().backward()
    (eb * weights).sum().backward()
    ga, gb = a.prompt_learner.ctx.grad, b.prompt_learner.ctx.grad
    assert ga.abs().max() > 0
    torch.testing.assert_close(gb, ga, atol=grad_rtol * float(ga.abs().max()), rtol=0)


LAYOUTS = [dict(n_ctx=4), dict(n_ctx=16), dict(n_ctx=4, class_token_position='middle'),
           dict(n_ctx=16, class_token_position='middle'), dict(n_ctx=16, share_prefix=False),
           dict(n_ctx=4, class_specific=True)]


@pytest.mark.parametrize('kwargs', LAYOUTS, ids=lambda k: '-'.join(f'{a}={b}'
                                                                     for a, b in k.items()))
def test_varlen_equals_grouped_for_every_name_length(make_encoder, kwargs):
    names, lengths = _every_length()
    assert len(lengths) >= 10  # ImageNet-21K names span many token lengths
    a, b = _pair(make_encoder, names, **kwargs)
    _assert_same(a, b, names)


@pytest.mark.slow
@pytest.mark.parametrize('kwargs', LAYOUTS[:5], ids=lambda k: '-'.join(f'{a}={b}'
                                                                         for a, b in k.items()))
def test_varlen_equals_grouped_over_all_imagenet21k_names(make_encoder, kwargs):
    vocab = _imagenet21k()
    a, b = _pair(make_encoder, vocab, **kwargs)
    _assert_same(a, b, list(vocab.names))


def test_varlen_and_padded_agree_with_openclip_on_hand_prompts(make_encoder, reference_clip):
    """A context initialised from 'a photo of a' is the hand prompt: every path gives
    open_clip's own encode_text for it."""
    clip, tok = reference_clip()
    names = ['cat', 'golden retriever', 'hot-air balloon']
    want = F.normalize(clip.encode_text(tok([f'a photo of a {n}.' for n in names])), dim=-1)
    for mode in ('varlen', 'grouped', 'padded'):
        enc = make_encoder(vocabulary=names, ctx_init='a photo of a', attention=mode)
        with torch.no_grad():
            torch.testing.assert_close(enc.encode_text(names), want, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ options
def test_pack_lengths_is_a_deprecated_alias(make_encoder):
    for flag, mode in ((True, 'grouped'), (False, 'padded')):
        with pytest.warns(DeprecationWarning, match=f"attention='{mode}'"):
            enc = make_encoder(n_ctx=4, pack_lengths=flag)
        assert enc.attention == mode
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert make_encoder(n_ctx=4).attention_mode() == 'grouped'  # 'auto' on the CPU
    with pytest.raises(ValueError, match="unknown attention 'flash'"):
        make_encoder(n_ctx=4, attention='flash')
    with pytest.raises(ValueError, match="attention='varlen' was given"), \
            pytest.warns(DeprecationWarning):
        make_encoder(n_ctx=4, attention='varlen', pack_lengths=False)


def test_token_table_follows_vocabulary_prompt_and_names(make_encoder):
    names = ['cat', 'golden retriever', 'bow (weapon)']
    enc = make_encoder(vocabulary=names, n_ctx=4)
    table = enc.token_table()
    assert enc.token_table() is table
    batch = enc.prompt_learner.tokenize(names, enc.tokenizer, enc.tower.context_length)
    sel = table.select(torch.tensor([2, 0]))
    assert torch.equal(sel.eot, batch.eot[[2, 0]])
    assert torch.equal(sel.tokens, batch.tokens[[2, 0], :sel.tokens.shape[1]])
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_classes(torch.tensor([2, 0])),
                                   enc.encode_names([names[2], names[0]]), atol=1e-6, rtol=0)
    enc.set_vocabulary(['dog', 'tree'])
    assert enc.token_table() is not table and len(enc.token_table()) == 2
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_classes(torch.tensor([1])),
                                   enc.encode_names(['tree']), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ the step
def _pretrainer(attention='varlen', names=None, **kwargs):
    from pomp_mm.pretrain.model import PompPretrainer
    torch.manual_seed(0)
    return PompPretrainer(clip_model=kwargs.pop('clip_model', 'tiny'), pretrained=None,
                          vocabulary=names or list(_imagenet21k().names[:2000]),
                          attention=attention, **kwargs).train()


def _step(model, seed=1, batch=8, views=2):
    gen = torch.Generator().manual_seed(seed)
    dim = model.text_encoder.tower.output_dim
    feats = F.normalize(torch.randn(batch * views, dim, generator=gen), dim=-1)
    labels = torch.randint(model.num_classes, (batch,), generator=gen)
    out = model.compute_loss(feats, labels, views)
    out['loss'].backward()
    return float(out['loss'].detach()), model.prompt_learner.ctx.grad.clone()


@pytest.mark.parametrize('contrast', ['shared', 'per_image'])
def test_pretrain_step_varlen_equals_grouped(contrast):
    runs = {}
    for mode in ('grouped', 'varlen', 'padded'):
        model = _pretrainer(mode, n_ctx=4, num_sampled=300, contrast=contrast, seed=4)
        runs[mode] = [_step(model, seed) for seed in (1, 2)]
    for mode in ('varlen', 'padded'):
        for (la, ga), (lb, gb) in zip(runs['grouped'], runs[mode]):
            assert lb == pytest.approx(la, abs=1e-5)
            torch.testing.assert_close(gb, ga, atol=1e-5 * float(ga.abs().max()), rtol=0)


def test_step_counter_is_read_again_when_the_buffer_changes():
    """The host keeps the step (it seeds the draws) without reading the device each step,
    but a checkpoint load or a reset is seen."""
    model = _pretrainer(n_ctx=4, num_sampled=64, seed=4)
    _step(model)
    first = model.last_class_ids.clone()
    _step(model)
    assert model._step == 2 and int(model.forward_count) == 2
    assert not torch.equal(model.last_class_ids, first)
    model.forward_count.zero_()
    assert model._step == 0
    _step(model)
    assert torch.equal(model.last_class_ids, first)
    model.load_state_dict(dict(model.state_dict(), forward_count=torch.tensor(7)))
    assert model._step == 7


class _CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def test_step_dispatch_count_does_not_grow_with_k_and_stays_below_the_official_step():
    """Ops dispatched by one text step (forward, backward, SGD): flat in K (no per-class host
    work), and no more than the official step's on the same tower (whose count does not
    depend on K: measured at K = 128 to keep the test short), as ``--dispatch`` claims."""
    from pomp_mm._benchmarking import count_dispatched_ops
    from pomp_mm.pretrain.official import OfficialPromptStep
    names = list(_imagenet21k().names[:3000])
    counts = {}
    for k in (128, 1000):
        model = _pretrainer('varlen', names, clip_model=DEEP_CLIP, n_ctx=16, num_sampled=k,
                            contrast='per_image', correction='log10', mask_duplicate_names=False)
        counts[k] = count_dispatched_ops(model, names, 32, 4, warmup=1)
    enc = model.text_encoder
    official = OfficialPromptStep(enc.tower, names, 16, 128, enc.tokenizer)
    theirs = count_dispatched_ops(official, names, 32, 4, warmup=1)
    assert abs(counts[1000] - counts[128]) <= 0.01 * counts[128], counts
    assert counts[1000] <= theirs, (counts, theirs)


@pytest.mark.slow
def test_compiled_step_equals_eager():
    eager = _pretrainer(n_ctx=4, num_sampled=64, seed=3)
    compiled = _pretrainer(n_ctx=4, num_sampled=64, seed=3, compile=True)
    for seed in (1, 2):
        (la, ga), (lb, gb) = _step(eager, seed), _step(compiled, seed)
        eager.prompt_learner.ctx.grad = compiled.prompt_learner.ctx.grad = None
        assert lb == pytest.approx(la, abs=1e-5)
        torch.testing.assert_close(gb, ga, atol=1e-5 * float(ga.abs().max()), rtol=0)
