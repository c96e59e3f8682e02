"""World v3: caption grammar frequencies, protocol v3 sets, seeded writers, paired intervals,
attribute probes and the training checkpoint."""
import hashlib
import json
import os
import re

import numpy as np
import pytest

from pomp_mm.evaluation.intervals import paired_bootstrap, per_class_accuracy
from pomp_mm.synthetic import captions_v3, protocol
from pomp_mm.synthetic.captions import caption, draw_domain
from pomp_mm.synthetic.datasets import eval_image, render_eval_set, write_eval_set
from pomp_mm.synthetic.world import COLOURS, SHAPES, WorldClass, parse_class


def _sha(image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()[:16]


@pytest.fixture(scope='module')
def drawn():
    """20,000 v3 captions of random pre-training classes, with their classes and domains."""
    classes = protocol.pretrain_classes()
    rng = np.random.default_rng(5)
    out = []
    for _ in range(20000):
        cls = classes[int(rng.integers(len(classes)))]
        domain = draw_domain(rng, 'v3')
        out.append((cls, domain, caption(cls, rng, domain, 'v3')))
    return out


def test_v3_grammar_frequencies_match_the_docs(drawn):
    n = len(drawn)
    texts = [t.lower() for _, _, t in drawn]
    hand = sum(bool(re.match(r'a photo of an? ', t)) for t in texts) / n
    assert hand <= 0.01  # the hand prompt's frame is a rare one
    full = sum(c.name in t for c, _, t in drawn) / n
    assert full < 0.01
    shape_word = sum(bool(re.search(rf'\b{c.shape}\b', t))
                     for (c, _, _), t in zip(drawn, texts)) / n
    assert 0.45 < shape_word < 0.62
    # captions that name no attribute of the object: scene-only and unrelated kinds
    rates = captions_v3.KIND_RATES
    assert 0.20 <= rates['terse'] + rates['scene'] <= 0.30
    none = sum(not any(re.search(rf'\b{w}\b', t) for w in (c.shape, c.colour, c.pattern))
               and not any(s in t for s in captions_v3.SHAPE_SYNONYMS.get(c.shape, ()))
               for (c, _, _), t in zip(drawn, texts)) / n
    assert 0.25 < none < 0.45  # scene, unrelated, generic-noun and synonym-free terse ones


def test_v3_frames_are_many_zipf_weighted_and_put_the_phrase_anywhere():
    frames, w = captions_v3.FRAMES, captions_v3.frame_weights()
    assert len(frames) >= 50 and len(set(frames)) == len(frames)
    assert w.sum() == pytest.approx(1) and np.all(np.diff(w) < 0)
    assert w[0] / w[9] == pytest.approx(10)  # Zipf, exponent 1
    where = {'start': 0, 'middle': 0, 'end': 0}
    for f in frames:
        where['start' if f.startswith('{obj}') else 'end' if f.endswith('{obj}')
              else 'middle'] += 1
    assert min(where.values()) >= 8


def test_v3_medium_words_follow_the_domain_with_a_few_percent_wrong(drawn):
    def words(d):
        return {w for p in captions_v3.MEDIUM_NOUNS[d] + captions_v3.MEDIUM_TAGS[d]
                for w in re.split(r'[ \-]', p)}
    domains = list(captions_v3.MEDIUM_NOUNS)
    other_text = ' '.join(captions_v3.FRAMES + captions_v3._SCENE_FRAMES +
                          captions_v3._UNRELATED + captions_v3._SITE_TAILS +
                          captions_v3._EXTENSIONS)
    common = set(re.split(r'[\W_]+', other_text))
    # words only one domain uses ("photo" is also in "blurry photo", "of" in frames)
    own = {d: words(d) - common - set().union(*(words(e) for e in domains if e != d))
           for d in domains}
    right = wrong = 0
    for _, domain, text in drawn:
        tokens = set(re.split(r'[\W_]+', text.lower()))
        right += bool(tokens & own[domain])
        wrong += any(tokens & own[d] for d in domains if d != domain)
    assert 0.25 < right / len(drawn) < 0.45
    assert 0.005 < wrong / len(drawn) < 0.03  # a few % mislabelled media


def test_v3_sources_and_kinds():
    cls = WorldClass('striped', 'red', 'star', 'sand')
    rng = np.random.default_rng(0)
    files = [caption(cls, rng, 'photo', 'v3') for _ in range(2000)]
    assert any(re.fullmatch(r'[\w\-]+\.(jpg|png|webp)', t) for t in files)
    assert any(t.istitle() for t in files)
    scene = captions_v3.caption_v3(cls, np.random.default_rng(1), 'sketch', kind='scene')
    assert 'star' not in scene and 'red' not in scene
    with pytest.raises(ValueError, match="unknown caption kind 'poem'"):
        captions_v3.caption_v3(cls, rng, 'photo', kind='poem')
    with pytest.raises(ValueError, match="unknown domain 'oil'"):
        captions_v3.caption_v3(cls, rng, 'oil')
    with pytest.raises(ValueError, match="unknown caption grammar 'v5'"):
        caption(cls, rng, 'photo', 'v5')


def test_v3_synonyms_name_real_attributes():
    assert set(captions_v3.SHAPE_SYNONYMS) <= set(SHAPES)
    assert set(captions_v3.SHAPE_HYPERNYMS) == set(SHAPES)
    assert set(captions_v3.COLOUR_SYNONYMS) <= set(COLOURS)


# --------------------------------------------------------------------------------- protocol
def test_protocol_v3_sets_and_the_v2_sets_unchanged():
    v2, v3 = protocol.eval_sets('v2'), protocol.eval_sets('v3')
    assert [(len(s.classnames), s.per_class) for s in v2.values()] == [
        (20, 25), (100, 5), (100, 5), (100, 5), (200, 3), (200, 3), (200, 3)]
    sizes = {n: (len(s.classnames), s.per_class) for n, s in v3.items()}
    assert sizes == {'shapes': (20, 100), 'colour-shape': (400, 10), 'pattern-shape': (200, 20),
                     'shape-background': (120, 25), 'colour-pattern-shape': (1000, 5),
                     'heldout-compositions': (100, 30), 'domain-photo': (200, 10),
                     'domain-sketch': (200, 10), 'domain-noisy': (200, 10)}
    assert protocol.cross_dataset_sets('v3') == (
        'colour-shape', 'pattern-shape', 'shape-background', 'colour-pattern-shape',
        'heldout-compositions')
    assert protocol.cross_dataset_sets('v2') == protocol.CROSS_DATASET_SETS
    s = v3['shape-background']
    images, labels = render_eval_set(s, per_class=1)
    assert len(images) == 120 and labels[:2] == [0, 1]
    for k in (0, 57):
        drawn = s.draw(k, np.random.default_rng(k))
        assert f'{drawn.shape} on {drawn.background}' == s.classnames[k]
    with pytest.raises(ValueError, match="unknown protocol version 'v9'"):
        protocol.eval_sets('v9')


#: image 1 of class 3 of v2's sets, as rendered before protocol v3 existed
V2_PINNED = {'shapes': '7e0f981be69268a1', 'colour-shape': 'e828ceab83fda56a',
             'heldout-compositions': '7eeeabcb9174314f', 'domain-sketch': 'b9f19a4bb8f40605'}


def test_v2_eval_images_are_unchanged_by_v3():
    sets = protocol.eval_sets('v2')
    assert {n: _sha(eval_image(sets[n], 3, 1)) for n in V2_PINNED} == V2_PINNED


def test_writers_with_a_new_seed_give_new_images_and_the_same_labels(tmp_path):
    s = protocol.eval_sets()['colour-shape']
    a = write_eval_set(s, str(tmp_path / 'a'), per_class=1, progress=False)
    b = write_eval_set(s, str(tmp_path / 'b'), per_class=1, progress=False, seed=12345)
    ja = json.load(open(f'{a}/classes.json'))
    jb = json.load(open(f'{b}/classes.json'))
    assert ja['classes'] == jb['classes'] and (ja['seed'], jb['seed']) == (777, 12345)
    name = s.classnames[3].replace(' ', '_')
    from PIL import Image
    ia, ib = Image.open(f'{a}/{name}/0000.png'), Image.open(f'{b}/{name}/0000.png')
    assert _sha(ia) != _sha(ib)
    assert _sha(ia) == _sha(eval_image(s, 3, 0))
    assert _sha(ib) == _sha(eval_image(s, 3, 0, seed=12345))
    # the same folder with another seed is refused, not mixed
    with pytest.raises(ValueError, match='rendered with'):
        write_eval_set(s, a, per_class=1, progress=False, seed=5)
    (tmp_path / 'old').mkdir()
    (tmp_path / 'old' / 'x.png').write_bytes(b'')
    with pytest.raises(ValueError, match='no render.json'):
        write_eval_set(s, str(tmp_path / 'old'), per_class=1, progress=False)


def test_custom_eval_set_takes_any_class_list(tmp_path):
    classes = [parse_class('plain red star on sand'), parse_class('hollow blue kite on snow')]
    s = protocol.custom_eval_set('mine', classes, per_class=2, domain='sketch')
    images, labels = render_eval_set(s, seed=3)
    assert labels == [0, 0, 1, 1] and s.classnames == tuple(c.name for c in classes)
    with pytest.raises(ValueError, match="got 'red star'"):
        protocol.custom_eval_set('bad', ['red star'])
    with pytest.raises(ValueError, match='per_class must be an integer in 1..1000, got 0'):
        protocol.custom_eval_set('bad', classes, per_class=0)
    with pytest.raises(ValueError, match='seed must be an integer'):
        render_eval_set(s, seed=-1)


# -------------------------------------------------------------------------------- intervals
def test_per_class_accuracy():
    acc = per_class_accuracy([0, 1, 1, 2, 0], [0, 1, 0, 2, 2], 4)
    assert acc[:3].tolist() == [50.0, 100.0, 50.0] and np.isnan(acc[3])
    with pytest.raises(ValueError, match='labels must be in 0..1'):
        per_class_accuracy([0], [2], 2)


def test_paired_bootstrap_against_a_hand_worked_example():
    # two classes, per-class differences 10 and 30: resampling 2 classes gives the means
    # 10 (p 1/4), 20 (p 1/2), 30 (p 1/4), so the 95 % percentile interval is [10, 30]
    a = {'s': [60.0, 80.0]}
    b = {'s': [50.0, 50.0]}
    iv = paired_bootstrap(a, b, num_boot=4000)
    assert iv.estimate == pytest.approx(20.0)
    assert (iv.low, iv.high) == (pytest.approx(10.0), pytest.approx(30.0))
    # the same difference for every class: no spread, however different the classes are
    iv = paired_bootstrap({'s': [10.0, 90.0, 40.0]}, {'s': [5.0, 85.0, 35.0]})
    assert (iv.estimate, iv.low, iv.high) == pytest.approx((5.0, 5.0, 5.0))


def test_paired_bootstrap_matches_the_normal_approximation_and_averages_sets():
    rng = np.random.default_rng(0)
    d = rng.normal(2.0, 10.0, 400)
    base = rng.uniform(20, 80, 400)
    iv = paired_bootstrap({'x': base + d}, {'x': base}, num_boot=4000)
    se = d.std(ddof=0) / np.sqrt(400)
    assert iv.half_width == pytest.approx(1.96 * se, rel=0.1)
    assert iv.estimate == pytest.approx(d.mean())
    # two sets: the estimate is the mean of the two set differences
    iv2 = paired_bootstrap({'x': base + d, 'y': [10.0, 20.0]}, {'x': base, 'y': [0.0, 0.0]})
    assert iv2.estimate == pytest.approx((d.mean() + 15.0) / 2)


def test_paired_bootstrap_resamples_seeds():
    # a method whose seeds differ by 4 points on every class: only seeds spread the interval
    a = {'s': [[50.0] * 50, [54.0] * 50]}
    b = {'s': [50.0] * 50}
    iv = paired_bootstrap(a, b, num_boot=4000)
    assert iv.estimate == pytest.approx(2.0)
    assert iv.low == pytest.approx(0.0) and iv.high == pytest.approx(4.0)


@pytest.mark.parametrize('a, b, match', [
    ({'s': [1.0]}, {'t': [1.0]}, 'same non-empty sets'),
    ({'s': [1.0, 2.0]}, {'s': [1.0]}, '2 classes for a, 1 for b'),
    ({'s': [np.nan]}, {'s': [1.0]}, 'NaN'),
    ({'s': [[[1.0]]]}, {'s': [1.0]}, 'shape'),
])
def test_paired_bootstrap_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(a, b)


# ---------------------------------------------------------------------------- CLIP build
def test_probe_check_names_every_low_probe_and_keeps_the_weights():
    from pomp_mm.synthetic import world_clip as wc
    card = {'weights': 'x.pt', 'probes_top1': {'shape': 79.5, 'colour': 95.0, 'pattern': 42.0,
                                               'background': 100.0}}
    with pytest.raises(ValueError, match=r'below 80 %: shape 79\.5 %, pattern 42\.0 % '
                       r'\(weights and card kept: x\.pt\)'):
        wc.check_probes(card)
    card['probes_top1'].update(shape=80.0, pattern=81.0)
    wc.check_probes(card)


def test_probe_images_vary_only_the_other_attributes():
    from pomp_mm.synthetic import world_clip as wc
    images, labels = wc.probe_images('pattern', per_value=2)
    assert len(images) == 20 and labels[:4] == [0, 0, 1, 1]
    again, _ = wc.probe_images('pattern', per_value=2)
    assert [_sha(a) for a in images] == [_sha(b) for b in again]
    other, _ = wc.probe_images('pattern', per_value=2, seed=1)
    assert _sha(other[0]) != _sha(images[0])
    with pytest.raises(ValueError, match="unknown probe 'size'"):
        wc.probe_images('size')
    with pytest.raises(ValueError, match='per_value must be an integer in 1..1000, got 0'):
        wc.probe_images('shape', per_value=0)


@pytest.mark.slow
def test_clip_training_resumes_from_its_checkpoint_and_refuses_other_settings(tmp_path):
    """An interrupted build loses nothing, in either stage: interrupted in the image-trunk
    stage or in the contrastive one, the resumed build gives the weights of an uninterrupted
    run; batches rendered in a worker process are the same batches."""
    import torch
    from pomp_mm.synthetic import world_clip as wc
    kw = dict(steps=3, batch_size=8, captions='v3', hard_share=0.5, checkpoint_every=2,
              model_name='pomp-world-CNN-T', threads=1, progress=False, image_steps=3,
              image_batch_size=8, shape_first_steps=1)
    whole = str(tmp_path / 'whole.pt')
    record = wc.train_world_clip(whole, **kw)
    assert record['final_image_loss'] > 0 and record['resumed_at_step'] is None
    assert not (tmp_path / 'whole.pt.ckpt').exists()  # removed once the weights are written
    resumed = []
    for calls, at in ((3, 2), (6, 5)):  # batch 3 is trunk step 2; batch 6 contrastive step 2
        part = str(tmp_path / f'part{calls}.pt')
        with pytest.raises(KeyboardInterrupt):
            _interrupt_after(wc, calls, lambda: wc.train_world_clip(part, **kw))
        assert (tmp_path / f'part{calls}.pt.ckpt').exists() and not os.path.exists(part)
        assert wc.train_world_clip(part, **kw)['resumed_at_step'] == at
        resumed.append(part)
    worker = str(tmp_path / 'worker.pt')
    wc.train_world_clip(worker, **{**kw, 'workers': 1})
    a = torch.load(whole, weights_only=True)
    assert any(k.startswith('visual.trunk.') for k in a)
    for other in resumed + [worker]:
        b = torch.load(other, weights_only=True)
        for k in a:
            torch.testing.assert_close(a[k], b[k])
    part = resumed[0]
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after(wc, 3, lambda: wc.train_world_clip(part, **kw))
    with pytest.raises(ValueError, match='checkpoint of another training run'):
        wc.train_world_clip(part, **{**kw, 'steps': 4})
    with pytest.raises(ValueError, match='image_steps and trunk_from need a timm image trunk; '
                       'pomp-world-ViT-T-8 has none'):
        wc.train_world_clip(str(tmp_path / 'vit.pt'), **{**kw, 'model_name': wc.VIT_MODEL_NAME})


def test_the_locked_trunk_is_the_trained_one(tmp_path):
    """Stage 2 leaves the trunk (weights and batch-norm statistics) as stage 1 made it, and
    trains the image projection and the text tower."""
    import torch
    from pomp_mm.synthetic import world_clip as wc
    kw = dict(batch_size=8, captions='v3', checkpoint_every=100, model_name='pomp-world-CNN-T',
              threads=1, progress=False, image_steps=2, image_batch_size=8)
    one = str(tmp_path / 'one.pt')
    two = str(tmp_path / 'two.pt')
    wc.train_world_clip(one, steps=1, **kw)
    wc.train_world_clip(two, steps=3, **kw)
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    for k in a:
        same = torch.equal(a[k], b[k])
        if k.startswith('visual.trunk.'):
            assert same, k
        elif k in ('visual.head.proj.weight', 'token_embedding.weight'):
            assert not same, k


def _interrupt_after(wc, calls: int, run):
    """Run ``run`` with the batch makers (both stages) raising KeyboardInterrupt on their
    ``calls``-th call in all."""
    real, real_attr = wc._batch, wc._AttributeBatches.__getitem__
    count = {'n': 0}

    def tick():
        count['n'] += 1
        if count['n'] >= calls:
            raise KeyboardInterrupt

    def batch(*args, **kwargs):
        tick()
        return real(*args, **kwargs)

    def attr(self, step):
        tick()
        return real_attr(self, step)

    wc._batch, wc._AttributeBatches.__getitem__ = batch, attr
    try:
        return run()
    finally:
        wc._batch, wc._AttributeBatches.__getitem__ = real, real_attr


def test_trunk_schedule_restarts_for_the_four_head_phase():
    """Warm-up and cosine in each phase of the image stage; without a shape-only phase, the
    schedule is the contrastive stage's (50 warm-up steps, then cosine)."""
    from pomp_mm.synthetic import world_clip as wc
    lrs = [wc._trunk_lr_scale(s, 2400, 1200) for s in range(2400)]
    assert lrs[49] == lrs[1249] == 1.0  # the peak after each warm-up
    assert lrs[1199] < 1e-5 and lrs[2399] < 1e-5  # each phase ends near 0
    assert lrs[1200] == pytest.approx(1 / 50)  # the four-head phase warms up again
    assert [wc._trunk_lr_scale(s, 300, 0) for s in range(300)] == \
        [wc._lr_scale(s, 300, 50) for s in range(300)]
