"""Caption grammars for training the world's CLIP.

``v1`` draws its template independently of the image, so its CLIP learns that the words around
a name carry nothing. ``v2`` picks most templates to describe the rendering domain ("a sketch of
a", "a blurry photo of a") and the rest neutral; both put the class words in class-name order
inside one of a few templates, so the hand prompt sits at the centre of the text distribution.
``v3`` (the committed CLIP's; see :mod:`~pomp_mm.synthetic.captions_v3` and
docs/synthetic_world.md) is modelled on web alt-text: a slot grammar with heavy-tailed pools.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from .render import DOMAINS
from .world import WorldClass

__all__ = ['caption', 'GRAMMARS', 'TEMPLATES', 'NEUTRAL_TEMPLATES', 'DOMAIN_TEMPLATES',
           'DOMAIN_MIX', 'NEUTRAL_RATE', 'draw_domain']

GRAMMARS = ('v1', 'v2', 'v3', 'v4')
#: v1: every template for every image
TEMPLATES: List[str] = [
    '{}', 'a {}', 'a photo of a {}', 'a picture of a {}', 'an image of a {}', 'this is a {}',
    'there is a {} here', 'a close-up photo of a {}', 'a small {}', 'a big {}',
    'look at this {}', 'my favourite {}', 'a drawing of a {}', 'a {} in the picture',
]
#: v2: templates that say nothing about the image's look, used for any domain
NEUTRAL_TEMPLATES: List[str] = [
    '{}', 'a {}', 'this is a {}', 'there is a {} here', 'look at this {}', 'my favourite {}',
    'a {} in the picture', 'a small {}', 'a big {}',
]
#: v2: templates that describe the rendering domain
DOMAIN_TEMPLATES: Dict[str, List[str]] = {
    'photo': ['a photo of a {}', 'a picture of a {}', 'an image of a {}',
              'a close-up photo of a {}', 'a snapshot of a {}', 'a photograph of a {}'],
    'sketch': ['a sketch of a {}', 'a drawing of a {}', 'a pencil drawing of a {}',
               'an outline of a {}', 'a doodle of a {}', 'a line drawing of a {}'],
    'noisy': ['a blurry photo of a {}', 'a noisy photo of a {}', 'a grainy picture of a {}',
              'a low quality photo of a {}', 'a fuzzy image of a {}', 'a blurred picture of a {}'],
}
assert set(DOMAIN_TEMPLATES) == set(DOMAINS)
#: v2: share of each domain among the CLIP's training images (web data is mostly photos)
DOMAIN_MIX: Dict[str, float] = {'photo': 0.6, 'sketch': 0.2, 'noisy': 0.2}
#: v2: share of captions with a neutral template
NEUTRAL_RATE = 0.4
_NOUNS = ('shape', 'object', 'thing', 'figure')
_PATTERN_NOUNS = {'striped': 'stripes', 'dotted': 'dots', 'checkered': 'checks',
                  'gridded': 'a grid', 'zigzag': 'zigzags', 'ringed': 'rings',
                  'speckled': 'speckles', 'shaded': 'shading'}
_PLACES = ('on {}', 'on {}', 'on {}', 'on the {}', 'over {}', 'lying on {}')


def draw_domain(rng: np.random.Generator, grammar: str = 'v2') -> str:
    """The rendering domain of a training image: always ``photo`` for v1, else (v2-v4) by
    :data:`DOMAIN_MIX` (one draw from ``rng``)."""
    _check_grammar(grammar)
    if grammar == 'v1':
        return 'photo'
    names = list(DOMAIN_MIX)
    return names[int(rng.choice(len(names), p=[DOMAIN_MIX[n] for n in names]))]


def _check_grammar(grammar: str) -> None:
    if grammar not in GRAMMARS:
        raise ValueError(f'unknown caption grammar {grammar!r}; choose from {GRAMMARS}')


def _template(rng: np.random.Generator, grammar: str, domain: Optional[str]) -> str:
    if grammar == 'v1':
        return TEMPLATES[rng.integers(len(TEMPLATES))]
    if domain not in DOMAIN_TEMPLATES:
        raise ValueError(f'unknown domain {domain!r}; choose from {tuple(DOMAIN_TEMPLATES)}')
    pool = NEUTRAL_TEMPLATES if rng.random() < NEUTRAL_RATE else DOMAIN_TEMPLATES[domain]
    return pool[rng.integers(len(pool))]


def caption(cls: WorldClass, rng: np.random.Generator, domain: str = 'photo',
            grammar: str = 'v2') -> str:
    """A random caption of an image of ``cls`` rendered in ``domain``.

    v1 and v2: shape (or a generic noun), and each of colour, pattern and background with some
    probability, in one of several word orders, inside a template of ``grammar`` (v1 ignores
    ``domain``). v3: :func:`~pomp_mm.synthetic.captions_v3.caption_v3`; v4:
    :func:`~pomp_mm.synthetic.captions_v4.caption_v4`."""
    _check_grammar(grammar)
    if grammar == 'v3':
        from .captions_v3 import caption_v3
        return caption_v3(cls, rng, domain)
    if grammar == 'v4':
        from .captions_v4 import caption_v4
        return caption_v4(cls, rng, domain)
    noun = cls.shape if rng.random() < 0.85 else _NOUNS[rng.integers(len(_NOUNS))]
    colour = cls.colour if rng.random() < 0.65 else None
    pattern = cls.pattern if rng.random() < 0.5 else None
    if pattern == 'plain' and rng.random() < 0.5:
        pattern = None
    words = ' '.join(w for w in (colour, noun) if w)
    if pattern and pattern in _PATTERN_NOUNS and rng.random() < 0.25:
        words = f'{words} with {_PATTERN_NOUNS[pattern]}'
    elif pattern:
        words = f'{pattern} {words}'
    if rng.random() < 0.5:
        words = f'{words} ' + _PLACES[rng.integers(len(_PLACES))].format(cls.background)
    text = _template(rng, grammar, domain).format(words)
    return text + '.' if rng.random() < 0.5 else text
