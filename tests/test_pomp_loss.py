"""POMP local-contrast sampler and local-correction loss."""
import math

import pytest
import torch
import torch.nn.functional as F

from pomp_mm.pretrain import (NegativeSampler, correction_margin, local_contrast_logits,
                              pomp_loss)


def _unit(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def _first_appearance(labels):
    seen = []
    for v in labels.tolist():
        if v not in seen:
            seen.append(v)
    return seen


# ----------------------------------------------------------------------------- margin / loss


@pytest.mark.parametrize('n,k', [(10, 3), (21841, 1000), (5, 2), (100, 100)])
def test_margin_values(n, k):
    assert correction_margin(n, k, 'ln') == pytest.approx(math.log((n - 1) / (k - 1)), abs=1e-12)
    want10 = math.log10((n - 1) / (k - 1))
    assert correction_margin(n, k, 'log10') == pytest.approx(want10, abs=1e-12)
    assert correction_margin(n, k, 'none') == 0.0
    assert correction_margin(n, k) == correction_margin(n, k, 'ln')


def test_margin_single_column_is_zero_and_validation():
    for corr in ('ln', 'log10', 'none'):
        assert correction_margin(50, 1, corr) == 0.0
    assert correction_margin(50, 50, 'ln') == 0.0
    with pytest.raises(ValueError, match='ln'):
        correction_margin(10, 3, 'log2')
    with pytest.raises(ValueError, match='num_contrasted'):
        correction_margin(10, 11)
    with pytest.raises(ValueError, match='num_contrasted'):
        correction_margin(10, 0)


@pytest.mark.parametrize('correction', ['none', 'ln', 'log10'])
def test_full_vocabulary_equals_full_softmax_ce(correction):
    n, b, d = 12, 7, 16
    img, txt = _unit(b, d, seed=1), _unit(n, d, seed=2)
    labels = torch.tensor([3, 3, 0, 11, 5, 0, 8])
    scale = 20.0
    sampler = NegativeSampler(n, k=n, seed=4)
    class_ids, targets = sampler.sample(labels)
    assert sorted(class_ids.tolist()) == list(range(n))
    logits = local_contrast_logits(img, txt[class_ids], scale)
    got = pomp_loss(logits, targets, num_classes=n, correction=correction)
    want = F.cross_entropy(scale * img @ txt.T, labels)
    assert got.dtype == torch.float64
    assert abs(got.item() - want.item()) < 1e-6
    # A K' < N subset must not coincide with the full loss, else the check above proves nothing.
    sub_ids, sub_t = NegativeSampler(n, k=6, seed=4).sample(labels)
    sub = pomp_loss(local_contrast_logits(img, txt[sub_ids], scale), sub_t, n, 'none')
    assert abs(sub.item() - want.item()) > 1e-3


def test_hand_computed_tiny_case():
    n = 10
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.3, 1.2, 0.7]], dtype=torch.float64)
    targets = torch.tensor([0, 2])
    for corr, m in (('ln', math.log(9 / 2)), ('log10', math.log10(9 / 2)), ('none', 0.0)):
        manual = 0.0
        for row, t in zip(logits.tolist(), targets.tolist()):
            shifted = [z + (0.0 if j == t else m) for j, z in enumerate(row)]
            manual += -shifted[t] + math.log(sum(math.exp(z) for z in shifted))
        manual /= 2
        got = pomp_loss(logits, targets, num_classes=n, correction=corr).item()
        assert got == pytest.approx(manual, abs=1e-12)
    # Correction raises the loss: non-target columns get a positive margin.
    assert pomp_loss(logits, targets, n, 'ln') > pomp_loss(logits, targets, n, 'none')


def test_pomp_loss_on_local_logits_and_gradient():
    n, b, d = 30, 4, 8
    img = _unit(b, d, seed=5)
    txt = _unit(6, d, seed=6).requires_grad_(True)
    targets = torch.tensor([0, 1, 1, 2])
    scale = torch.tensor(math.log(100.0), dtype=torch.float64).exp()
    loss = pomp_loss(local_contrast_logits(img, txt, scale), targets, n)
    ref = pomp_loss(scale * img @ txt.T, targets, n, 'ln')
    assert loss.item() == pytest.approx(ref.item(), abs=1e-12)
    loss.backward()
    assert txt.grad is not None
    assert txt.grad.abs().sum() > 0
    assert torch.isfinite(txt.grad).all()
    with pytest.raises(ValueError, match='log10'):
        pomp_loss(scale * img @ txt.T, targets, n, 'log2')


def test_pomp_loss_rejects_bad_targets():
    with pytest.raises(ValueError, match='targets'):
        pomp_loss(torch.zeros(2, 3), torch.tensor([0, 3]), num_classes=10)


# ----------------------------------------------------------------------------- sampler invariants


def _make(mode, n, k, seed=0, rank=0, **kw):
    if mode == 'frequency':
        kw.setdefault('class_counts', torch.arange(1, n + 1).tolist())
    sampler = NegativeSampler(n, k, mode=mode, seed=seed, rank=rank, **kw)
    if mode == 'hard':
        sampler.update_bank(_unit(n, 8, seed=seed + 7, dtype=torch.float32), step=0)
    return sampler


@pytest.mark.parametrize('mode', ['uniform', 'frequency', 'hard'])
def test_sampler_invariants(mode):
    g = torch.Generator().manual_seed(123)
    for n, k in ((40, 10), (40, 40), (40, 3), (60, 1)):
        sampler = _make(mode, n, k)
        for _ in range(25):
            b = int(torch.randint(1, 9, (1,), generator=g))
            labels = torch.randint(0, n, (b,), generator=g)
            class_ids, targets = sampler.sample(labels)
            pos = _first_appearance(labels)
            ids = class_ids.tolist()
            assert class_ids.dtype == torch.long and targets.dtype == torch.long
            assert ids[:len(pos)] == pos
            assert len(ids) == max(min(k, n), len(pos))
            assert len(set(ids)) == len(ids)  # negatives never repeat nor equal a positive
            assert all(0 <= c < n for c in ids)
            assert torch.equal(class_ids[targets], labels)


def test_more_positives_than_k_gives_no_negatives():
    sampler = NegativeSampler(50, k=2, seed=1)
    labels = torch.tensor([7, 3, 7, 9, 1])
    class_ids, targets = sampler.sample(labels)
    assert class_ids.tolist() == [7, 3, 9, 1]
    assert targets.tolist() == [0, 1, 0, 2, 3]


@pytest.mark.parametrize('mode', ['uniform', 'frequency', 'hard'])
def test_large_vocabulary(mode):
    n, k = 21841, 1000
    sampler = _make(mode, n, k, seed=3)
    labels = torch.randint(0, n, (64,), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        class_ids, targets = sampler.sample(labels)
        assert class_ids.numel() == k
        assert class_ids.unique().numel() == k
        assert torch.equal(class_ids[targets], labels)


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize('mode', ['uniform', 'frequency', 'hard'])
def test_seed_and_rank(mode):
    """Same seed and rank: the same draws; another rank: other negatives. (Resumption needs no
    sampler state: PompPretrainer reseeds from (seed, rank, step) every step.)"""
    n, k = 500, 40
    labels = torch.tensor([4, 17, 4, 250])
    a, b = _make(mode, n, k, seed=11), _make(mode, n, k, seed=11)
    for _ in range(3):
        assert torch.equal(a.sample(labels)[0], b.sample(labels)[0])

    r0, r1 = _make(mode, n, k, seed=11, rank=0), _make(mode, n, k, seed=11, rank=1)
    assert not torch.equal(r0.sample(labels)[0][3:], r1.sample(labels)[0][3:])


def test_sampler_does_not_touch_global_rng():
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    NegativeSampler(100, 20).sample(torch.tensor([1, 2]))
    assert torch.equal(torch.rand(3), before)


# ----------------------------------------------------------------------------- weighted modes


def test_frequency_mode_follows_counts():
    n = 20
    counts = [0] + [100] * 4 + [1] * (n - 5)  # class 0 never seen, 1..4 frequent
    sampler = NegativeSampler(n, k=4, mode='frequency', class_counts=counts, seed=2)
    hits = torch.zeros(n)
    labels = torch.tensor([10])
    for _ in range(300):
        class_ids, _ = sampler.sample(labels)
        hits[class_ids[1:]] += 1
    assert hits[0] == 0
    frequent = hits[1:5].mean()
    rare = hits[5:].sum() - hits[10]  # rare classes other than the positive
    assert frequent > 20 * (rare / (n - 6))

    # Too few non-zero-count classes left: K' shrinks rather than drawing a zero-count class.
    small = NegativeSampler(5, k=5, mode='frequency', class_counts=[0, 0, 3, 1, 1], seed=0)
    class_ids, _ = small.sample(torch.tensor([2]))
    assert sorted(class_ids.tolist()) == [2, 3, 4]


def test_hard_mode_prefers_near_duplicates():
    n, d = 60, 16
    base = _unit(n, d, seed=21, dtype=torch.float32)
    near = [1, 2, 3]
    bank = base.clone()
    bank[near] = base[0] + 0.05 * base[near]  # near-duplicates of the positive class 0
    sampler = NegativeSampler(n, k=3, mode='hard', seed=5, refresh_interval=100)
    with pytest.raises(RuntimeError, match='update_bank'):
        sampler.sample(torch.tensor([0]))
    assert sampler.needs_refresh(0)
    sampler.update_bank(bank * 3.0, step=10)  # unnormalised input: normalised internally
    assert torch.allclose(sampler.bank.norm(dim=-1), torch.ones(n))
    hits = torch.zeros(n)
    for _ in range(200):
        class_ids, _ = sampler.sample(torch.tensor([0]))
        hits[class_ids[1:]] += 1
    assert hits[0] == 0
    assert hits[near].sum() > 0.9 * hits.sum()

    assert not sampler.needs_refresh(10)
    assert not sampler.needs_refresh(109)
    assert sampler.needs_refresh(110)
    sampler.update_bank(bank, step=110)
    assert not sampler.needs_refresh(150)
    assert not NegativeSampler(n, 3).needs_refresh(10 ** 6)


def test_hard_mode_scores_by_the_nearest_positive():
    """Two positives: near-duplicates of either one are hard (max over positives, not the
    min or the mean, which would miss the classes close to only one of them)."""
    n, d = 60, 16
    base = _unit(n, d, seed=21, dtype=torch.float32)
    bank = base.clone()
    bank[[2, 3]] = base[0] + 0.05 * base[[2, 3]]  # near class 0 only
    bank[[4, 5]] = base[1] + 0.05 * base[[4, 5]]  # near class 1 only
    sampler = NegativeSampler(n, k=4, mode='hard', seed=5)
    sampler.update_bank(bank)
    hits = torch.zeros(n)
    for _ in range(200):
        class_ids, _ = sampler.sample(torch.tensor([0, 1]))
        hits[class_ids[2:]] += 1
    assert hits[[2, 3]].sum() > 0.4 * hits.sum() and hits[[4, 5]].sum() > 0.4 * hits.sum()


# ----------------------------------------------------------------------------- validation


def test_error_messages():
    with pytest.raises(ValueError, match='label 12 '):
        NegativeSampler(10, 3).sample(torch.tensor([1, 12, 3]))
    with pytest.raises(ValueError, match='label -1 '):
        NegativeSampler(10, 3).sample(torch.tensor([-1]))
    with pytest.raises(ValueError, match=r"'uniform', 'frequency', 'hard'"):
        NegativeSampler(10, 3, mode='random')
    with pytest.raises(ValueError, match='class_counts'):
        NegativeSampler(10, 3, mode='frequency')
    with pytest.raises(ValueError, match='9 entries'):
        NegativeSampler(10, 3, mode='frequency', class_counts=[1] * 9)
    with pytest.raises(ValueError, match='non-negative'):
        NegativeSampler(3, 2, mode='frequency', class_counts=[1, -2, 1])
    with pytest.raises(ValueError, match='k must be >= 1'):
        NegativeSampler(10, 0)
    with pytest.raises(ValueError, match='num_classes must be >= 2'):
        NegativeSampler(1, 1)
    with pytest.raises(ValueError, match='rows'):
        NegativeSampler(10, 3, mode='hard').update_bank(torch.randn(9, 4))


# ----------------------------------------------------------------------------- per-column margins


def _manual_loss(logits, targets, margins):
    """Mean CE with margins[j] added to every non-target column j (plain Python)."""
    total = 0.0
    for row, t in zip(logits.tolist(), targets.tolist()):
        shifted = [z + (0.0 if j == t else margins[j]) for j, z in enumerate(row)]
        total += -shifted[t] + math.log(sum(math.exp(z) for z in shifted))
    return total / len(targets)


def test_uniform_probs_reduce_to_the_eq5_margin():
    n, k = 50, 7
    sampler = NegativeSampler(n, k, seed=3)
    labels = torch.tensor([4, 9, 4])
    class_ids, targets, probs = sampler.sample(labels, return_probs=True)
    assert probs.dtype == torch.float64 and probs.tolist() == [(k - 1) / (n - 1)] * k
    # the probabilities do not change the draw
    again = NegativeSampler(n, k, seed=3).sample(labels)
    assert torch.equal(again[0], class_ids) and torch.equal(again[1], targets)
    logits = _unit(3, k, seed=8) * 5
    for corr in ('ln', 'log10', 'none'):
        plain = pomp_loss(logits, targets, n, corr)
        with_q = pomp_loss(logits, targets, n, corr, inclusion_probs=probs)
        assert with_q.item() == pytest.approx(plain.item(), abs=1e-12)
    m = math.log((n - 1) / (k - 1))
    assert plain.item() != pytest.approx(_manual_loss(logits, targets, [m] * k))  # 'none'
    assert pomp_loss(logits, targets, n, 'ln', probs).item() == pytest.approx(
        _manual_loss(logits, targets, [m] * k), abs=1e-12)


def _poisson_reference(weights, m):
    """1 - exp(-lam w_j) with sum = m, lam by plain bisection (independent of the code; numpy
    float64 for the sums, 21,841 classes)."""
    import numpy as np
    w = np.asarray(weights, dtype=np.float64)
    lo, hi = 0.0, 1e6 / float(w.max())
    for _ in range(200):
        lam = (lo + hi) / 2
        total = float(np.sum(1 - np.exp(-lam * w)))
        lo, hi = (lam, hi) if total < m else (lo, lam)
    return (1 - np.exp(-lam * w)).tolist()


def test_frequency_margins_are_minus_log_inclusion_probs():
    counts = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    n, k = 10, 4
    sampler = NegativeSampler(n, k, mode='frequency', class_counts=counts, seed=0)
    labels = torch.tensor([0, 1, 0])
    class_ids, targets, probs = sampler.sample(labels, return_probs=True)
    assert class_ids[:2].tolist() == [0, 1] and len(class_ids) == k
    # 2 negatives drawn (K' - P) from the non-positive classes: Poisson inclusion
    pi = _poisson_reference([0, 0] + counts[2:], 2)
    want = [3 / 9, 3 / 9] + [pi[j] for j in class_ids[2:].tolist()]
    assert probs.tolist() == pytest.approx(want, abs=1e-9)
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.3], [0.3, 1.2, 0.7, -0.2], [0.0, 0.1, 0.2, 0.3]],
                          dtype=torch.float64)
    for corr, log in (('ln', math.log), ('log10', math.log10)):
        margins = [-log(q) for q in want]
        got = pomp_loss(logits, targets, n, corr, inclusion_probs=probs)
        assert got.item() == pytest.approx(_manual_loss(logits, targets, margins), abs=1e-12)
        uniform = pomp_loss(logits, targets, n, corr)
        assert abs(got.item() - uniform.item()) > 1e-3  # the per-column margins do matter
    assert pomp_loss(logits, targets, n, 'none', probs).item() == pytest.approx(
        _manual_loss(logits, targets, [0.0] * k), abs=1e-12)


def test_inclusion_probs_match_sampled_frequencies():
    """The reported q_j is how often a rare class really enters the step (first order: good
    where q_j is small, which is where the margin is large)."""
    counts = [5.0] * 10 + [1.0] * 40
    sampler = NegativeSampler(50, 8, mode='frequency', class_counts=counts, seed=0)
    labels = torch.tensor([0, 1])
    seen = torch.zeros(50)
    reported = {}
    for _ in range(4000):
        ids, _, probs = sampler.sample(labels, return_probs=True)
        seen[ids[2:]] += 1
        reported.update(zip(ids[2:].tolist(), probs[2:].tolist()))
    pi = _poisson_reference([0.0, 0.0] + counts[2:], 6)
    for j in (5, 20, 30, 45):
        assert reported[j] == pytest.approx(pi[j], abs=1e-9)
        assert seen[j].item() / 4000 == pytest.approx(reported[j], rel=0.1)


def test_inclusion_probs_at_pomp_scale_on_a_peaked_distribution():
    """K = 1,000 of N = 21,841 Zipf-like counts: the reported probabilities follow the sampled
    frequencies in every weight band (min(1, M p_j) was 4x too small for light classes), and no
    margin exceeds log(N - 1)."""
    n, k = 21841, 1000
    counts = (1e4 / torch.arange(1, n + 1, dtype=torch.float64) ** 1.2).tolist()
    sampler = NegativeSampler(n, k, mode='frequency', class_counts=counts, seed=0)
    labels = torch.tensor([5000, 6000])
    seen, reported = torch.zeros(n), torch.zeros(n, dtype=torch.float64)
    rounds = 120
    for _ in range(rounds):
        ids, _, probs = sampler.sample(labels, return_probs=True)
        seen[ids[2:]] += 1
        reported[ids[2:]] = probs[2:]
        assert (-probs.log()).max().item() <= math.log(n - 1) + 1e-9
    weights = torch.tensor(counts)
    weights[labels] = 0
    first_order = (weights / weights.sum() * (k - 2)).clamp(max=1)
    reference = torch.tensor(_poisson_reference(weights.tolist(), k - 2))
    for lo, hi in ((100, 1000), (1000, 5000), (7000, 21841)):
        band = torch.arange(lo, hi)
        band = band[reported[band] > 0]  # classes drawn at least once carry their report
        empirical = seen[lo:hi].mean().item() / rounds
        ours = reference[lo:hi].mean().item()
        assert ours == pytest.approx(empirical, rel=0.08), (lo, hi)
        assert reported[band].mean().item() >= 0.5 * ours  # drawn ones: not the old tiny q
        assert first_order[lo:hi].mean().item() < 0.5 * empirical  # what the old formula gave


def test_inclusion_probs_clamp_and_validation():
    # one dominant class: drawn for sure, probability 1 (margin 0)
    sampler = NegativeSampler(6, 3, mode='frequency', class_counts=[1, 1000, 1, 1, 1, 1], seed=0)
    class_ids, targets, probs = sampler.sample(torch.tensor([0]), return_probs=True)
    assert 1 in class_ids.tolist()
    assert probs[class_ids.tolist().index(1)].item() == pytest.approx(1.0, abs=1e-12)
    logits = torch.zeros(1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r'inclusion_probs must have shape \[3\]'):
        pomp_loss(logits, targets, 6, inclusion_probs=probs[:2])
    with pytest.raises(ValueError, match=r'must be in \(0, 1\]; column 2 has 0.0'):
        pomp_loss(logits, targets, 6, inclusion_probs=torch.tensor([0.5, 0.5, 0.0]))
    # a single column has no non-target column: nothing to validate or add
    single = pomp_loss(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), 6, 'ln',
                       inclusion_probs=torch.zeros(1))
    assert single.item() == 0.0


@pytest.mark.parametrize('mode', ['frequency', 'hard'])
def test_non_uniform_loss_is_finite_with_gradient(mode):
    n, d = 200, 8
    sampler = _make(mode, n, 20, seed=1)
    labels = torch.tensor([3, 17, 3, 150])
    class_ids, targets, probs = sampler.sample(labels, return_probs=True)
    txt = _unit(n, d, seed=2)[class_ids].requires_grad_(True)
    img = _unit(4, d, seed=3)
    loss = pomp_loss(local_contrast_logits(img, txt, 50.0), targets, n, inclusion_probs=probs)
    loss.backward()
    # reference: 50 * cosine, margin -log q_j on every non-target column, cross-entropy
    ref_txt = txt.detach().clone().requires_grad_(True)
    logits = 50.0 * img @ ref_txt.T
    margins = -probs.log().to(logits.dtype)
    non_target = torch.ones_like(logits, dtype=torch.bool)
    non_target[torch.arange(4), targets] = False
    ref = torch.nn.functional.cross_entropy(logits + margins * non_target, targets)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(txt.grad, ref_txt.grad, atol=1e-6, rtol=1e-5)


def _pretrainer_step(num_classes, images, labels, **kwargs):
    """One PompPretrainer loss, the sampler's draw, and the step's logits rebuilt by hand."""
    from pomp_mm.pretrain import PompPretrainer
    names = [f'class {i}' for i in range(num_classes)]
    torch.manual_seed(0)
    model = PompPretrainer(clip_model='tiny', vocabulary=names, n_ctx=4, **kwargs)
    drawn = []
    sample = model.sampler.sample
    model.sampler.sample = lambda *a, **k: drawn.append(sample(*a, **k)) or drawn[-1]
    with torch.no_grad():
        loss = model(inputs=images, labels=labels)['loss']
        img = model.encode_images(images)  # views of image 0 first, then image 1's, ...
        txt = model.text_encoder.encode_names([names[i] for i in drawn[0][0].tolist()])
        logits = (model.text_encoder.tower.logit_scale.exp() * img @ txt.T).double()
    return loss, drawn[0], logits


def test_pretrainer_frequency_mode_uses_per_negative_margins():
    loss, (class_ids, targets, probs), logits = _pretrainer_step(
        12, torch.randn(2, 1, 3, 32, 32), torch.tensor([2, 7]), num_sampled=5,
        sampling='frequency', class_counts=list(range(1, 13)))
    want = _manual_loss(logits, targets, [-math.log(q) for q in probs.tolist()])
    assert loss.item() == pytest.approx(want, abs=1e-5)
    uniform = _manual_loss(logits, targets, [math.log(11 / 4)] * 5)
    assert abs(want - uniform) > 1e-3


@pytest.mark.parametrize('correction,margin', [('ln', math.log(7 / 3)),
                                               ('log10', math.log10(7 / 3)), ('none', 0.0)])
def test_pretrainer_uniform_loss_is_eq5_with_views_in_order(correction, margin):
    """The default path end to end: N=8, K=4, two images of two views each; every non-target
    column gets log((N-1)/(K-1)) and each image's views keep that image's class."""
    loss, (class_ids, _, _), logits = _pretrainer_step(
        8, torch.randn(2, 2, 3, 32, 32), torch.tensor([5, 1]), num_sampled=4,
        correction=correction)
    assert class_ids[:2].tolist() == [5, 1] and len(class_ids) == 4
    want = _manual_loss(logits, torch.tensor([0, 0, 1, 1]), [margin] * 4)
    assert loss.item() == pytest.approx(want, abs=1e-5)


def test_classes_sharing_a_name_are_left_out_of_each_others_softmax():
    """Twin names (ImageNet-21K lemma collisions) give identical prompts: by default a twin of
    the target is masked out of that image's softmax (reference: cross-entropy without that
    column); mask_duplicate_names=False keeps the official behaviour (all columns)."""
    import torch.nn.functional as F

    from pomp_mm.pretrain import PompPretrainer
    vocab = ['cat', 'dog', 'Cat', 'bird', 'fish', 'dog', 'cow', 'ant']
    feats = F.normalize(torch.randn(4, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    labels = torch.tensor([0, 1, 3, 4])
    out = {}
    for mask in (True, False):
        torch.manual_seed(0)
        model = PompPretrainer(clip_model='tiny', vocabulary=vocab, n_ctx=4, num_sampled=None,
                               correction='none', mask_duplicate_names=mask)
        res = model.compute_loss(feats, labels, 1)
        ids = model.last_class_ids.tolist()
        with torch.no_grad():
            text = model.text_encoder.encode_names([vocab[i] for i in ids])
        logits = model.text_encoder.tower.logit_scale.exp() * feats @ text.T
        targets = torch.tensor([ids.index(i) for i in labels.tolist()])
        if mask:  # image 0 (cat) drops 'Cat'; image 1 (dog) drops the second 'dog'
            logits[0, ids.index(2)] = float('-inf')
            logits[1, ids.index(5)] = float('-inf')
        out[mask] = float(res['loss'].detach())
        assert out[mask] == pytest.approx(float(F.cross_entropy(logits, targets)), rel=1e-5)
        assert float(res['masked_twins']) == (2.0 if mask else 0.0)
    assert out[True] < out[False]


# ----------------------------------------------------------------------------- per-image contrast


def _official_logits(image_features, pos_text, neg_text, labels, neg_labels, scale, n,
                     probs=None, log=torch.log10):
    """Transcription of the official step (trainers/pomp.py, CustomCLIP.forward, EPT branch):
    a row is [own positive, the sampled negatives], own label rejected with -1e6."""
    logits_pos = scale * (image_features * pos_text).sum(dim=-1, keepdims=True)
    logits_neg = scale * image_features @ neg_text.t()
    bsz, num_oob = image_features.size(0), neg_labels.size(0)
    reject_labels = labels.unsqueeze(1) == neg_labels.unsqueeze(0).expand(bsz, -1)
    logits_neg = logits_neg - 1e6 * reject_labels
    if probs is None:  # NEG_SAMPLING_MODE == 'random'
        logits_neg = logits_neg + log(torch.tensor(n - 1).to(logits_neg))
        true_label_oob_num = torch.tensor([[num_oob]] * bsz).to(logits_neg) - \
            reject_labels.sum(-1, keepdims=True).to(logits_neg)
        logits_neg = logits_neg - log(true_label_oob_num)
    else:
        logits_neg = logits_neg - log(probs).to(logits_neg)
    return torch.cat([logits_pos, logits_neg], dim=1)


def _per_image_case():
    from pomp_mm.pretrain import per_image_logits  # noqa: F401
    n, d = 12, 8
    text = _unit(n, d, seed=3)
    labels = torch.tensor([0, 4, 4, 7])
    neg_labels = torch.tensor([4, 9, 1, 7, 11])  # rows 1 and 2 drew their own label, row 3 too
    image = _unit(4, d, seed=4)
    return n, text, labels, neg_labels, image


@pytest.mark.parametrize('correction,log,mlog', [('log10', torch.log10, math.log10),
                                                 ('ln', torch.log, math.log)])
def test_per_image_logits_match_the_official_random_mode(correction, log, mlog):
    from pomp_mm.pretrain import per_image_logits
    n, text, labels, neg_labels, image = _per_image_case()
    got = per_image_logits(image, text[labels], text[neg_labels], labels, neg_labels, 30.0, n,
                           correction=correction)
    want = _official_logits(image, text[labels], text[neg_labels], labels, neg_labels, 30.0, n,
                            log=log)
    assert got.shape == (4, 6)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
    # row 0 kept all 5 negatives, rows 1-3 kept 4: the margins differ by log(5/4)
    margin = got[:, 1:] - 30.0 * image @ text[neg_labels].T
    assert margin[0, 1].item() == pytest.approx(mlog(11 / 5), abs=1e-9)
    assert margin[1, 1].item() == pytest.approx(mlog(11 / 4), abs=1e-9)
    assert got[1, 1] < -1e5 and got[2, 1] < -1e5 and got[3, 4] < -1e5 and got[0, 1] > -1e5
    none = per_image_logits(image, text[labels], text[neg_labels], labels, neg_labels, 30.0, n,
                            correction='none')
    torch.testing.assert_close(none[0, 1:], 30.0 * image[0] @ text[neg_labels].T)


def test_per_image_logits_match_the_official_non_random_branch_and_gradients():
    from pomp_mm.pretrain import per_image_logits
    n, text, labels, neg_labels, image = _per_image_case()
    probs = torch.tensor([0.3, 0.05, 0.2, 0.4, 1e-4], dtype=torch.float64)
    pos_t = text[labels].clone().requires_grad_(True)
    neg_t = text[neg_labels].clone().requires_grad_(True)
    got = per_image_logits(image, pos_t, neg_t, labels, neg_labels, 30.0, n,
                           inclusion_probs=probs)
    want = _official_logits(image, text[labels], text[neg_labels], labels, neg_labels, 30.0, n,
                            probs=probs)
    torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-9)
    # the margin of the rare draw is -log10(1e-4) = 4
    assert (got[0, 5] - 30.0 * image[0] @ text[11]).item() == pytest.approx(4.0, abs=1e-9)
    loss = F.cross_entropy(got, torch.zeros(4, dtype=torch.long))
    loss.backward()
    # against finite differences of the official loss, in float64
    def official_loss(p, q):
        return F.cross_entropy(_official_logits(image, p, q, labels, neg_labels, 30.0, n,
                                                probs=probs), torch.zeros(4, dtype=torch.long))
    assert torch.autograd.gradcheck(official_loss, (text[labels].clone().requires_grad_(True),
                                                    text[neg_labels].clone().requires_grad_(True)))
    p = text[labels].clone().requires_grad_(True)
    q = text[neg_labels].clone().requires_grad_(True)
    official_loss(p, q).backward()
    torch.testing.assert_close(pos_t.grad, p.grad)
    torch.testing.assert_close(neg_t.grad, q.grad)
    # a rejected column gets no gradient: negative 0 (class 4) only sees rows 0 and 3
    assert neg_t.grad[0].abs().sum() > 0


def test_per_image_logits_ignore_counts_as_rejected():
    from pomp_mm.pretrain import per_image_logits
    n, text, labels, neg_labels, image = _per_image_case()
    ignore = torch.zeros(4, 5, dtype=torch.bool)
    ignore[0, 2] = True
    got = per_image_logits(image, text[labels], text[neg_labels], labels, neg_labels, 30.0, n,
                           ignore=ignore)
    plain = per_image_logits(image, text[labels], text[neg_labels], labels, neg_labels, 30.0, n)
    assert got[0, 3] < -1e5
    assert (got[0, 1] - plain[0, 1]).item() == pytest.approx(math.log10(5 / 4), abs=1e-9)
    torch.testing.assert_close(got[1:], plain[1:])


def test_per_image_logits_bad_input_names_the_value():
    from pomp_mm.pretrain import per_image_logits
    n, text, labels, neg_labels, image = _per_image_case()
    args = (image, text[labels], text[neg_labels], labels, neg_labels, 30.0, n)
    with pytest.raises(ValueError, match=r"unknown correction 'log2'"):
        per_image_logits(*args, correction='log2')
    with pytest.raises(ValueError, match=r'column 1 has 0\.0'):
        per_image_logits(*args, inclusion_probs=torch.tensor([0.5, 0.0, 0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match=r'column 4 has 1\.5'):
        per_image_logits(*args, inclusion_probs=torch.tensor([0.5, 0.5, 0.5, 0.5, 1.5]))
    with pytest.raises(ValueError, match=r'shape \[5\].*got \(4,\)'):
        per_image_logits(*args, inclusion_probs=torch.full((4,), 0.5))
    with pytest.raises(ValueError, match=r'neg_labels \[5\], got \(4,\) and \(3,\)'):
        per_image_logits(image, text[labels], text[neg_labels], labels, neg_labels[:3], 30.0, n)


def _per_image_step(vocab, features, labels, num_views, **kwargs):
    """One per-image PompPretrainer loss on given features, and the same step rebuilt with the
    official transcription from the negatives the model drew."""
    from pomp_mm.pretrain import PompPretrainer
    torch.manual_seed(0)
    model = PompPretrainer(clip_model='tiny', vocabulary=vocab, n_ctx=4, contrast='per_image',
                           **kwargs)
    out = model.compute_loss(features, labels, num_views)
    neg = model.last_negatives
    with torch.no_grad():
        text = model.text_encoder.encode_names(vocab).double()
        scale = model.text_encoder.tower.logit_scale.exp().double()
    rows = labels.repeat_interleave(num_views)
    return model, out, neg, text, rows, scale


def test_pretrainer_per_image_contrast_is_the_official_step():
    """N=12, K=6: 5 negatives from all 12 classes, two images of two views; the loss is the
    official transcription's (log10 margins counted per row, own label rejected)."""
    vocab = [f'class {i}' for i in range(12)]
    feats = _unit(4, 32, seed=5, dtype=torch.float32)
    labels = torch.tensor([3, 8])
    hits = 0
    for seed in range(6):  # several draws, so some row rejects its own label
        model, out, neg, text, rows, scale = _per_image_step(
            vocab, feats, labels, 2, num_sampled=6, correction='log10', seed=seed)
        assert neg.numel() == 5 and len(set(neg.tolist())) == 5
        logits = _official_logits(feats.double(), text[rows], text[neg], rows, neg, scale, 12)
        want = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
        assert out['loss'].item() == pytest.approx(want.item(), abs=1e-5)
        assert out['num_contrasted'].item() == 6
        hits += int((rows[:, None] == neg[None, :]).any())
        # the text tower saw each class of the union once
        assert sorted(model.last_class_ids.tolist()) == sorted(set(neg.tolist()) | {3, 8})
    assert hits  # the rejection branch was exercised


def test_pretrainer_per_image_twins_follow_each_view():
    """vocabulary [cat, dog, Cat, bird], labels [0, 2], two views: each view of the cat image
    rejects 'Cat' (and the other way round) when drawn, and the loss stays finite."""
    vocab = ['cat', 'dog', 'Cat', 'bird']
    feats = _unit(4, 32, seed=6, dtype=torch.float32)
    labels = torch.tensor([0, 2])
    model, out, neg, text, rows, scale = _per_image_step(
        vocab, feats, labels, 2, num_sampled=4, correction='log10')
    assert len(neg) == 3  # M = 3 of 4: a twin of some row is among them
    twin_of = {0: 2, 2: 0}
    ignore = torch.stack([neg == twin_of[int(r)] for r in rows])
    logits = _official_logits(feats.double(), text[rows], text[neg], rows, neg, scale, 4)
    logits[:, 1:] -= 1e6 * ignore
    kept = 3 - (rows[:, None] == neg[None, :]).sum(1) - ignore.sum(1)
    logits[:, 1:] += (torch.log10(3 - (rows[:, None] == neg[None, :]).sum(1).double())
                      - torch.log10(kept.double().clamp(min=1)))[:, None]
    want = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    assert out['loss'].item() == pytest.approx(want.item(), abs=1e-5)
    assert out['masked_twins'].item() == float(ignore[::2].sum()) > 0


@pytest.mark.parametrize('sampling', ['frequency', 'hard'])
def test_pretrainer_per_image_non_uniform_uses_each_draws_probability(sampling):
    vocab = [f'class {i}' for i in range(12)]
    feats = _unit(2, 32, seed=7, dtype=torch.float32)
    labels = torch.tensor([1, 4])
    kwargs = dict(class_counts=list(range(1, 13))) if sampling == 'frequency' else {}
    from pomp_mm.pretrain import NegativeSampler
    probs_seen = []
    orig = NegativeSampler.sample_shared_negatives

    def spy(self, *a, **k):
        probs_seen.append(orig(self, *a, **k))
        return probs_seen[-1]
    NegativeSampler.sample_shared_negatives = spy
    try:
        model, out, neg, text, rows, scale = _per_image_step(
            vocab, feats, labels, 1, num_sampled=5, sampling=sampling,
            correction='ln', **kwargs)
    finally:
        NegativeSampler.sample_shared_negatives = orig
    probs = probs_seen[0][1]
    assert probs is not None and probs.shape == (4,) and (probs < 1).all()
    logits = _official_logits(feats.double(), text[rows], text[neg], rows, neg, scale, 12,
                              probs=probs, log=torch.log)
    want = F.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
    assert out['loss'].item() == pytest.approx(want.item(), abs=1e-5)


def test_pretrainer_contrast_bad_input_names_the_value():
    from pomp_mm.pretrain import PompPretrainer
    vocab = [f'class {i}' for i in range(6)]
    with pytest.raises(ValueError, match=r"unknown contrast 'official'"):
        PompPretrainer(clip_model='tiny', vocabulary=vocab, contrast='official')
    for k in (7, None, 1):
        with pytest.raises(ValueError, match=rf'in \[2, N=6\], got {k}'):
            PompPretrainer(clip_model='tiny', vocabulary=vocab, contrast='per_image',
                           num_sampled=k)


def test_twins_are_masked_per_view_and_in_acc_local():
    """Shared contrast, vocabulary [cat, dog, Cat, bird], labels [0, 2], two views each: every
    view of 'cat' drops 'Cat' and the other way round (reference: cross-entropy without those
    columns), and acc_local does not count a tie with the twin as an error."""
    from pomp_mm.pretrain import PompPretrainer
    vocab = ['cat', 'dog', 'Cat', 'bird']
    torch.manual_seed(0)
    model = PompPretrainer(clip_model='tiny', vocabulary=vocab, n_ctx=4, num_sampled=None,
                           correction='none')
    with torch.no_grad():
        text = model.text_encoder.encode_names(vocab)
    # each view is its class's own text feature: the target ties with its twin
    labels = torch.tensor([0, 2])
    feats = text[labels].repeat_interleave(2, 0)
    res = model.compute_loss(feats, labels, 2)
    ids = model.last_class_ids.tolist()
    assert ids[:2] == [0, 2]
    logits = model.text_encoder.tower.logit_scale.exp() * feats @ text[ids].T
    logits[:2, ids.index(2)] = float('-inf')
    logits[2:, ids.index(0)] = float('-inf')
    targets = torch.tensor([0, 0, 1, 1])
    assert res['loss'].item() == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-5)
    assert res['masked_twins'].item() == 2.0
    assert res['acc_local'].item() == 1.0


def test_ranks_draw_different_negatives_for_the_same_labels():
    """Two ranks with identical labels at the same step: the rank is part of the step seed."""
    from pomp_mm.pretrain import PompPretrainer
    vocab = [f'class {i}' for i in range(40)]
    feats = _unit(2, 32, seed=8, dtype=torch.float32)
    drawn = []
    for rank in (0, 1, 0):
        torch.manual_seed(0)
        model = PompPretrainer(clip_model='tiny', vocabulary=vocab, n_ctx=4, num_sampled=8)
        model.rank = rank
        model.compute_loss(feats, torch.tensor([3, 9]), 1)
        drawn.append(model.last_class_ids.tolist())
    assert drawn[0] == drawn[2] and drawn[0] != drawn[1]


def test_inclusion_floor_caps_the_margin_at_log_n_minus_1():
    """A class weighted 1 among 1e6-weighted ones has a Poisson inclusion probability far below
    1 / (N - 1); the floor keeps its margin at log(N - 1) (4.6 at N = 100, not ~16)."""
    n = 100
    counts = [1e6] * n
    counts[50] = 1.0
    sampler = NegativeSampler(n, 10, mode='frequency', class_counts=counts, seed=0)
    draw = sampler._sample_negatives

    def with_the_rare_class(positives, num_neg):  # the rare draw, made certain
        picked, weights = draw(positives, num_neg)
        picked[-1] = 50
        return picked, weights
    sampler._sample_negatives = with_the_rare_class
    class_ids, _, probs = sampler.sample(torch.tensor([0]), return_probs=True)
    j = class_ids.tolist().index(50)
    assert probs[j].item() == pytest.approx(1 / (n - 1))
    assert -math.log(probs[j].item()) == pytest.approx(math.log(n - 1))
    assert (probs >= 1 / (n - 1) - 1e-15).all()


def test_shared_negatives_floor_the_rare_class_at_1_over_n_minus_1(monkeypatch):
    """The per-image contrast's draw (sample_shared_negatives) floors the inclusion
    probability too: the rare class, forced into the draw, gets 1 / (N - 1), not its Poisson
    value (~1e-5), and the common ones keep their Poisson values."""
    from pomp_mm.pretrain.sampling import poisson_inclusion
    n, m = 100, 10
    counts = [1e6] * n
    counts[50] = 1.0
    sampler = NegativeSampler(n, 5, mode='frequency', class_counts=counts, seed=0)
    multinomial = torch.multinomial

    def with_the_rare_class(weights, num, *args, **kwargs):  # the rare draw, made certain
        picked = multinomial(weights, num, *args, **kwargs)
        if 50 not in picked.tolist():
            picked[-1] = 50
        return picked
    monkeypatch.setattr(torch, 'multinomial', with_the_rare_class)
    picked, probs = sampler.sample_shared_negatives(torch.tensor([0, 7]), m, return_probs=True)
    monkeypatch.undo()
    j = picked.tolist().index(50)
    poisson = poisson_inclusion(torch.tensor(counts), m)
    assert poisson[50].item() < 1e-4  # the floor is what lifts it
    assert probs[j].item() == pytest.approx(1 / (n - 1))
    assert -math.log(probs[j].item()) == pytest.approx(math.log(n - 1))
    common = [i for i, c in enumerate(picked.tolist()) if c != 50]
    torch.testing.assert_close(probs[common], poisson[picked[common]])


def test_official_transcription_and_per_image_contrast_agree():
    """Two implementations of one loss: the official step (full-length padded prompts from
    per-class buffers, B + M prompts) and PompPretrainer(contrast='per_image') (shared prefix,
    packed union of classes) give the same loss and prompt gradient for the same draw."""
    from pomp_mm.pretrain import PompPretrainer
    from pomp_mm.pretrain.official import OfficialPromptStep
    vocab = ['cat', 'dog', 'sea lion', 'golden retriever', 'car', 'tree', 'fire truck', 'cup',
             'shoe', 'red wine', 'boat', 'lamp']
    torch.manual_seed(0)
    ours = PompPretrainer(clip_model='tiny', vocabulary=vocab, n_ctx=4, num_sampled=6,
                          contrast='per_image', correction='log10', mask_duplicate_names=False)
    official = OfficialPromptStep(ours.text_encoder.tower, vocab, 4, 6,
                                  ours.text_encoder.tokenizer)
    with torch.no_grad():
        official.ctx.copy_(ours.prompt_learner.ctx)
    feats = _unit(6, 32, seed=9, dtype=torch.float32)
    labels = torch.tensor([2, 9, 2])
    for step in range(3):
        ours.prompt_learner.ctx.grad = official.ctx.grad = None
        mine = ours.compute_loss(feats, labels, 2)['loss']
        mine.backward()
        theirs = official(feats, labels.repeat_interleave(2), ours.last_negatives)
        theirs.backward()
        assert mine.item() == pytest.approx(theirs.item(), abs=1e-5)
        grad = official.ctx.grad
        torch.testing.assert_close(ours.prompt_learner.ctx.grad, grad,
                                   atol=1e-3 * grad.abs().max().item(), rtol=0)
    assert official.buffer_bytes() > 0


def test_hard_sampling_without_a_bank_says_what_to_call():
    sampler = NegativeSampler(20, 5, mode='hard')
    for draw in (lambda: sampler.sample(torch.tensor([1, 2])),
                 lambda: sampler.sample_shared_negatives(torch.tensor([1, 2]), 4)):
        with pytest.raises(RuntimeError, match=r'no class-embedding bank; call update_bank'):
            draw()
    with pytest.raises(ValueError, match=r'draws 1\.\.20 negatives from the 20 classes, got 21'):
        NegativeSampler(20, 5).sample_shared_negatives(torch.tensor([1]), 21)
