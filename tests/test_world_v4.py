"""World v4: caption stream v4's stated frequencies, trunk reuse and the head-half probe check."""
from collections import Counter

import numpy as np
import pytest
import torch

from pomp_mm.synthetic import captions_v4 as c4
from pomp_mm.synthetic import world_clip as wc
from pomp_mm.synthetic.captions_v3 import SHAPE_SYNONYMS, _shape_word
from pomp_mm.synthetic.protocol import pretrain_classes
from pomp_mm.synthetic.world import ATTRIBUTES, WorldClass

DRAWS = 20_000


def _spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def test_value_ranks_are_a_fixed_permutation_with_a_tail_half():
    for kind, values in ATTRIBUTES.items():
        ranks = c4.value_ranks(kind)
        assert sorted(ranks.values()) == list(range(1, len(values) + 1))
        assert sum(c4.is_tail(kind, v) for v in values) == len(values) // 2
    assert c4.value_ranks('shape')['circle'] == 1  # RANK_SEED fixes the world
    with pytest.raises(ValueError, match="unknown attribute 'size'"):
        c4.value_ranks('size')


@pytest.mark.slow
def test_stream_frequencies_fall_with_rank_on_20000_draws():
    """Classes drawn by the v4 weights: every attribute's value frequencies fall with its rank
    (the pair factors blur the Zipf line, not its direction) and the head half of the values
    is drawn more than twice as often as the tail half."""
    classes = pretrain_classes()
    rng = np.random.default_rng(0)
    drawn = [classes[int(i)] for i in rng.choice(len(classes), DRAWS, p=c4.class_weights(classes))]
    for kind, values in ATTRIBUTES.items():
        counts = Counter(getattr(c, kind) for c in drawn)
        ranks = c4.value_ranks(kind)
        freq = [counts[v] / DRAWS for v in values]
        assert _spearman([ranks[v] for v in values], freq) <= -0.6, (kind, freq)
        tail = sum(counts[v] for v in values if c4.is_tail(kind, v)) / DRAWS
        assert tail < (1 - tail) / 2, (kind, tail)
    top = Counter(c.index for c in drawn).most_common(1)[0][1] / DRAWS
    assert 0.02 <= top <= 0.05  # the most frequent class: 3.3 % of the stream


def test_caption_noise_and_tail_wordings_at_their_stated_rates():
    rng = np.random.default_rng(1)
    cls = WorldClass('plain', 'red', 'circle', 'sand')
    changed = Counter()
    for _ in range(DRAWS):
        noisy = c4._noisy(cls, rng)
        changed.update(k for k in ATTRIBUTES if getattr(noisy, k) != getattr(cls, k))
    for kind in ATTRIBUTES:
        assert changed[kind] / DRAWS == pytest.approx(c4.NOISE_RATE, abs=0.006), kind
    for wording, rate in ((c4._HEAD, 0.10), (c4._TAIL, 0.20)):
        words = Counter(_shape_word(rng, 'circle', wording.shape_rates) for _ in range(DRAWS))
        synonyms = sum(words[w] for w in SHAPE_SYNONYMS['circle']) / DRAWS
        assert synonyms == pytest.approx(rate, abs=0.012), (wording, synonyms)
        assert words['circle'] / DRAWS == pytest.approx(
            wording.shape_rates['exact'], abs=0.015)
    assert sum(c4._TAIL.shape_rates.values()) == pytest.approx(1.0)


def test_v4_captions_are_reproducible_and_use_the_tail_wording():
    tail_shape = next(v for v in ATTRIBUTES['shape']
                      if c4.is_tail('shape', v) and v in SHAPE_SYNONYMS)
    cls = WorldClass('plain', 'red', tail_shape, 'sand')
    a = [c4.caption_v4(cls, np.random.default_rng([3, i])) for i in range(50)]
    assert a == [c4.caption_v4(cls, np.random.default_rng([3, i])) for i in range(50)]


@pytest.mark.slow
def test_trunk_from_locks_v3s_trunk_and_trains_the_text_side(tmp_path):
    """Two contrastive steps on stream v4 from the committed v3 trunk: the trunk (batch-norm
    statistics included) is bit-identical, the text tower moved, the trunk's sha256 is in the
    record."""
    out = str(tmp_path / 'v4.pt')
    rec = wc.train_world_clip(out, steps=2, batch_size=8, captions='v4', hard_share=0.5,
                              model_name='pomp-world-CNN-T-v4', trunk_from=wc.WEIGHTS_PATH,
                              warmup=1, progress=False)
    assert rec['trunk_from_sha256'] == wc.sha256_file(wc.WEIGHTS_PATH)
    got = torch.load(out, weights_only=True)
    v3 = torch.load(wc.WEIGHTS_PATH, weights_only=True)
    trunk = [k for k in v3 if k.startswith('visual.trunk.')]
    assert trunk and all(torch.equal(got[k], v3[k]) for k in trunk)
    assert not torch.equal(got['token_embedding.weight'], v3['token_embedding.weight'])


def test_trunk_from_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match='image_steps must be 0, got 5'):
        wc.train_world_clip(str(tmp_path / 'x.pt'), steps=1, batch_size=4,
                            model_name='pomp-world-CNN-T-v4', trunk_from=wc.WEIGHTS_PATH,
                            image_steps=5, progress=False)
    with pytest.raises(ValueError, match='holds no image trunk'):
        wc.train_world_clip(str(tmp_path / 'x.pt'), steps=1, batch_size=4,
                            model_name='pomp-world-CNN-T-v4', trunk_from=wc.VIT_WEIGHTS_PATH,
                            progress=False)


def test_v4_build_checks_only_the_head_half():
    card = {'weights': 'v4.pt', 'probes_top1': {'shape': 60.0},
            'probes_top1_by_v4_half': {'shape-head': 90.0, 'shape-tail': 30.0,
                                       'colour-head': 85.0, 'colour-tail': 10.0}}
    wc.check_probes(card, head_only=True)  # the tail is reported, not checked
    with pytest.raises(ValueError, match=r'below 80 %: shape 60.0 % \(weights and card kept'):
        wc.check_probes(card)
    card['probes_top1_by_v4_half']['colour-head'] = 70.0
    with pytest.raises(ValueError, match='colour-head 70.0 %'):
        wc.check_probes(card, head_only=True)


def test_headroom_halves_split_the_probe_classes_by_stream_frequency():
    """headroom.py's pretrain-2000-head / -tail: the 2,000 probe classes split at the median
    v4 frequency, the head half drawn more often."""
    from helpers import load_tool
    hr = load_tool('synthetic/headroom')
    every = hr.pretrain_probe_classes()
    head, tail = (hr.pretrain_probe_classes(n) for n in hr.PRETRAIN_HALVES)
    assert len(head) == len(tail) == 1000
    assert {c.index for c in head} | {c.index for c in tail} == {c.index for c in every}
    w = dict(zip((c.index for c in every), c4.class_weights(every)))
    assert min(w[c.index] for c in head) >= max(w[c.index] for c in tail)
    with pytest.raises(ValueError, match="unknown pre-training set 'pretrain-x'"):
        hr.pretrain_probe_classes('pretrain-x')


def test_clip_options_put_a_checked_world_clip_into_the_configs(tmp_path, monkeypatch):
    """make demo --world-clip: the pre-training configs get the model name and its committed
    weights, checked against the card; an unknown name or a corrupted file is refused."""
    from pomp_mm.synthetic import experiments as exp
    assert exp.clip_options(None) == []
    assert exp.clip_options(wc.MODEL_NAME) == [f'model.clip_model={wc.MODEL_NAME}',
                                               f'model.pretrained={wc.WEIGHTS_PATH}']
    with pytest.raises(ValueError, match="unknown world CLIP 'pomp-world-X'"):
        exp.clip_options('pomp-world-X')
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not the weights')
    monkeypatch.setattr(wc, 'asset_path', lambda name, suffix: str(bad) if suffix == '.pt'
                        else wc.CARD_PATH)
    with pytest.raises(ValueError, match='the file is corrupted or not the committed one'):
        exp.clip_options(wc.MODEL_NAME)


@pytest.mark.slow
def test_long_tail_report_against_a_constructed_example():
    """long_tail: Spearman against hand-worked ranks; a label's named values; a method that
    gains exactly 4 points on the rare half of every set and 0 on the frequent half."""
    from pomp_mm.synthetic import long_tail as lt
    from pomp_mm.synthetic.protocol import cross_dataset_sets, eval_sets
    assert lt.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert lt.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): r = 0.9487
    assert lt.spearman([1, 5, 5, 9], [1, 2, 3, 4]) == pytest.approx(0.9487, abs=1e-4)
    cs = eval_sets('v3')['colour-shape']
    colour, shape = cs.classnames[0].split()
    assert lt.named_attributes(cs, 0) == {'colour': colour, 'shape': shape}
    freq = lt.value_frequencies()
    assert sum(freq['shape'].values()) == pytest.approx(1.0)
    assert lt.label_frequencies(cs)[0] == pytest.approx(freq['colour'][colour] *
                                                        freq['shape'][shape])
    hand, pomp = {}, {}
    for name in cross_dataset_sets('v3'):
        f = lt.label_frequencies(eval_sets('v3')[name])
        rng = np.random.default_rng(0)
        hand[name] = rng.uniform(40, 60, len(f))
        pomp[name] = hand[name] + np.where(f < np.median(f), 4.0, 0.0)
    report = lt.tail_report({'hand': hand, 'pomp': pomp}, 'v3', num_boot=200)
    assert report['pooled']['tail']['estimate'] == pytest.approx(4.0)
    assert report['pooled']['head']['estimate'] == pytest.approx(0.0)
    assert all(r['tail_gain'] == pytest.approx(4.0) for r in report['sets'])
    with pytest.raises(ValueError, match="need 'pomp' and 'hand' per-class accuracies"):
        lt.tail_report({'hand': hand}, 'v3')
