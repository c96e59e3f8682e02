"""Caption grammar for training the world's CLIP: web-like captions that vary the template and
mention only some attributes, so that no caption format equals a class name by construction."""
from __future__ import annotations

from typing import List

import numpy as np

from .world import WorldClass

__all__ = ['caption', 'TEMPLATES']

TEMPLATES: List[str] = [
    '{}', 'a {}', 'a photo of a {}', 'a picture of a {}', 'an image of a {}', 'this is a {}',
    'there is a {} here', 'a close-up photo of a {}', 'a small {}', 'a big {}',
    'look at this {}', 'my favourite {}', 'a drawing of a {}', 'a {} in the picture',
]
_NOUNS = ('shape', 'object', 'thing', 'figure')
_PATTERN_NOUNS = {'striped': 'stripes', 'dotted': 'dots', 'checkered': 'checks',
                  'gridded': 'a grid', 'zigzag': 'zigzags', 'ringed': 'rings',
                  'speckled': 'speckles', 'shaded': 'shading'}
_PLACES = ('on {}', 'on {}', 'on {}', 'on the {}', 'over {}', 'lying on {}')


def caption(cls: WorldClass, rng: np.random.Generator) -> str:
    """A random caption of an image of ``cls``: shape (or a generic noun), and each of colour,
    pattern and background with some probability, in one of several word orders."""
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
    text = TEMPLATES[rng.integers(len(TEMPLATES))].format(words)
    return text + '.' if rng.random() < 0.5 else text
