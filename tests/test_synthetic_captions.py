"""Caption grammars v1 and v2 (the committed v2 CLIP was trained on v2): pinned draws, domain
mix, template rates and bad input."""
import numpy as np
import pytest

from pomp_mm.synthetic.captions import (DOMAIN_MIX, DOMAIN_TEMPLATES, NEUTRAL_RATE,
                                        NEUTRAL_TEMPLATES, TEMPLATES, caption, draw_domain)
from pomp_mm.synthetic.world import WorldClass

CLS = WorldClass('striped', 'red', 'star', 'sand')


def test_v1_and_v2_draws_are_pinned():
    """Older CLIPs rebuild only if a seed gives the same captions: five draws of each."""
    want = {
        'v1': ['a close-up photo of a red star with stripes on the sand', 'red star on the sand',
               'there is a striped red shape lying on sand here.',
               'a photo of a red star with stripes over sand.', 'this is a red star.'],
        'v2': ['an outline of a red star with stripes on the sand.',
               'a sketch of a red star with stripes.',
               'an outline of a striped red star lying on sand.',
               'a red star with stripes on sand in the picture', 'look at this red star over sand'],
    }
    for grammar, captions in want.items():
        rng = np.random.default_rng([7, 1])
        assert [caption(CLS, rng, 'sketch', grammar) for _ in range(5)] == captions


def _templates_used(grammar, domain, n=3000):
    rng = np.random.default_rng(0)
    texts = [caption(CLS, rng, domain, grammar).rstrip('.') for _ in range(n)]
    return texts


def test_v2_describes_the_domain_in_most_captions_and_v1_ignores_it():
    for domain in ('photo', 'sketch', 'noisy'):
        texts = _templates_used('v2', domain)
        own = [t for t in texts if any(t.startswith(tpl.split('{}')[0]) and
                                       tpl.split('{}')[0] for tpl in DOMAIN_TEMPLATES[domain])]
        others = [t for t in texts for d, pool in DOMAIN_TEMPLATES.items() if d != domain
                  and any(t.startswith(tpl.split('{}')[0]) for tpl in pool)]
        assert abs(len(own) / len(texts) - (1 - NEUTRAL_RATE)) < 0.03, domain
        assert not others, others[:3]
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert [caption(CLS, rng_a, 'photo', 'v1') for _ in range(50)] == \
        [caption(CLS, rng_b, 'noisy', 'v1') for _ in range(50)]
    prefixes = {tpl.split('{}')[0] for tpl in TEMPLATES}
    assert all(any(t.startswith(p) for p in prefixes) for t in _templates_used('v1', 'photo'))
    assert set(NEUTRAL_TEMPLATES) <= set(TEMPLATES)


def test_captions_name_the_class_words():
    texts = _templates_used('v2', 'photo')
    assert all('star' in t or any(n in t for n in ('shape', 'object', 'thing', 'figure'))
               for t in texts)
    share = {w: np.mean([w in t for t in texts]) for w in ('star', 'red', 'sand')}
    assert 0.80 < share['star'] < 0.90 and 0.60 < share['red'] < 0.70
    assert 0.45 < share['sand'] < 0.55


def test_domain_mix():
    rng = np.random.default_rng(0)
    draws = [draw_domain(rng, 'v2') for _ in range(5000)]
    for domain, p in DOMAIN_MIX.items():
        assert abs(draws.count(domain) / len(draws) - p) < 0.02
    assert {draw_domain(rng, 'v1') for _ in range(100)} == {'photo'}


def test_bad_grammar_and_domain_name_the_value():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown caption grammar 'v9'"):
        caption(CLS, rng, 'photo', 'v9')
    with pytest.raises(ValueError, match="unknown caption grammar 'v0'"):
        draw_domain(rng, 'v0')
    with pytest.raises(ValueError, match="unknown domain 'painting'"):
        caption(CLS, rng, 'painting', 'v2')


#: classes and domains of the v3/v4 digests: a tail shape and colour (star, red), a shape and
#: colour with synonyms (crescent, navy), a pattern named as a noun (dotted)
_DIGEST_CLASSES = (CLS, WorldClass('plain', 'navy', 'crescent', 'snow'),
                   WorldClass('dotted', 'teal', 'hexagon', 'bricks'))


def _digest(fn) -> str:
    """First 16 hex digits of the sha256 of 3,600 captions (400 per class and domain)."""
    import hashlib
    rng = np.random.default_rng([7, 5])
    texts = [fn(cls, rng, domain) for cls in _DIGEST_CLASSES
             for domain in ('photo', 'sketch', 'noisy') for _ in range(400)]
    return hashlib.sha256('\n'.join(texts).encode()).hexdigest()[:16]


def test_v3_and_v4_draws_are_pinned():
    """World v3's and v4's CLIPs were trained on these grammars and their cards' rebuild
    commands depend on them: a seed must give the same captions. Readable draws catch a change
    of word order, a dropped attribute or an edited frame; the digest of 3,600 draws catches
    the rare frames and wordings (a swap of two frames, a changed synonym)."""
    from pomp_mm.synthetic.captions_v3 import caption_v3
    from pomp_mm.synthetic.captions_v4 import caption_v4
    rng = np.random.default_rng([7, 3])
    assert [caption_v3(CLS, rng, 'sketch', kind='object') for _ in range(8)] == [
        'handmade star, striped.', 'someone left a figure',
        'check out this red star with stripes against sand', 'star isolated',
        'striped_star_lying_on_sandy_ground_168.png', 'Striped Red Five-Pointed Star',
        'my striped red star', 'Striped Scarlet Star lol']
    rng = np.random.default_rng([7, 3])
    assert [caption_v3(CLS, rng, 'photo') for _ in range(8)] == [
        'see more', 'A Icon, Striped On Sand, Bokeh',
        'a picture of a red star against desert sand', 'star_photo_537.jpg',
        'red_striped_icon_on_desert_sand_picture_low_quality_364.webp', 'Striped Star',
        'my striped red star', 'Striped Red Star | shop now']
    rng = np.random.default_rng([7, 4])
    assert [caption_v4(CLS, rng, 'noisy', kind='object') for _ in range(8)] == [
        'close up of a star.', 'vintage thing against desert sand',
        'the scarlet striped symbol.', 'best striped star ever.',
        'best star with stripes against desert sand ever', 'Top View Of A Red Figure',
        'a quick blurry photo of a red six-sided shape lying on desert sand',
        'there is a striped red lightning bolt here']
    assert _digest(caption_v3) == 'ef283a5a911dd19b'
    assert _digest(caption_v4) == 'ff7e927cee61be7f'
