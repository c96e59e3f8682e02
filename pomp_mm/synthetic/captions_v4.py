"""Caption stream v4: grammar v3's alt-text with the web's long tail of concepts.

Registered in docs/synthetic_world.md ("World v4") before it was built. Within each attribute
the values get a fixed, seeded rank; the contrastive stream draws an image's class with
probability proportional to the product of its values' Zipf weights (1 / rank) and a seeded
log-normal factor per (colour, shape) and (pattern, shape) pair, so common values and pairs are
seen and named often and the tail rarely, as on the web. Tail values (rank in the lower half)
are named by a synonym or hypernym twice as often as in v3, and each attribute word names a
wrong value of its attribute with probability :data:`NOISE_RATE`. The renderer, the classes
and the image trunk are v3's; only which pairs the text tower sees changes.
"""
from __future__ import annotations

import dataclasses
import zlib
from functools import lru_cache
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .captions_v3 import _SHAPE_WORD, _COLOUR_SYNONYM_RATE, _Wording, caption_v3
from .world import ATTRIBUTES, WorldClass

__all__ = ['RANK_SEED', 'ZIPF', 'PAIR_SD', 'NOISE_RATE', 'TAIL_WORDING_FACTOR', 'value_ranks',
           'is_tail', 'class_weights', 'caption_v4', 'tail_share']

#: Seed of the value ranks and pair factors (fixed: it defines the world).
RANK_SEED = 4
#: Zipf exponent of value frequencies (word frequencies are close to 1).
ZIPF = 1.0
#: Standard deviation of the log of each pair's factor.
PAIR_SD = 1.0
#: Share of attribute words that name another value of the same attribute.
NOISE_RATE = 0.05
#: Tail values are named by a synonym or hypernym this many times as often as in v3.
TAIL_WORDING_FACTOR = 2.0


@lru_cache(maxsize=None)
def value_ranks(kind: str) -> Dict[str, int]:
    """Rank (1 = most frequent) of each value of attribute ``kind``: a seeded permutation."""
    if kind not in ATTRIBUTES:
        raise ValueError(f'unknown attribute {kind!r}; choose from {tuple(ATTRIBUTES)}')
    values = ATTRIBUTES[kind]
    order = np.random.default_rng([RANK_SEED, zlib.crc32(kind.encode())]).permutation(len(values))
    return {values[int(i)]: r + 1 for r, i in enumerate(order)}


def is_tail(kind: str, value: str) -> bool:
    """Whether ``value`` is in the rarer half of its attribute's values."""
    return value_ranks(kind)[value] > len(ATTRIBUTES[kind]) / 2


def _pair_factor(kind: str, value: str, shape: str) -> float:
    key = zlib.crc32(f'{kind}:{value}|{shape}'.encode())
    return float(np.exp(np.random.default_rng([RANK_SEED, key]).normal(0.0, PAIR_SD)))


def _class_weight(cls: WorldClass) -> float:
    w = 1.0
    for kind in ATTRIBUTES:
        w /= value_ranks(kind)[getattr(cls, kind)] ** ZIPF
    return w * _pair_factor('colour', cls.colour, cls.shape) \
        * _pair_factor('pattern', cls.pattern, cls.shape)


def class_weights(classes: Sequence[WorldClass]) -> np.ndarray:
    """Probability of drawing each of ``classes`` in the v4 stream (sums to 1)."""
    w = np.array([_class_weight(c) for c in classes], dtype=np.float64)
    return w / w.sum()


def _tail_wording() -> _Wording:
    rates = dict(_SHAPE_WORD)
    extra = 0.0
    for how in ('synonym', 'hypernym'):
        extra += rates[how] * (TAIL_WORDING_FACTOR - 1)
        rates[how] *= TAIL_WORDING_FACTOR
    rates['exact'] -= extra
    return _Wording(rates, _COLOUR_SYNONYM_RATE * TAIL_WORDING_FACTOR)


_HEAD, _TAIL = _Wording(), _tail_wording()


def _noisy(cls: WorldClass, rng: np.random.Generator) -> WorldClass:
    """``cls`` with each attribute replaced, with probability :data:`NOISE_RATE`, by another
    value of the same attribute (the caption then names it)."""
    changes = {}
    for kind, pool in ATTRIBUTES.items():
        if rng.random() < NOISE_RATE:
            others = [v for v in pool if v != getattr(cls, kind)]
            changes[kind] = others[int(rng.integers(len(others)))]
    return dataclasses.replace(cls, **changes) if changes else cls


def caption_v4(cls: WorldClass, rng: np.random.Generator, domain: str = 'photo',
               kind: Optional[str] = None) -> str:
    """A v4 caption of an image of ``cls`` in ``domain``: grammar v3 with caption noise and,
    for a tail shape or colour, its rarer wordings (``kind`` as in
    :func:`~pomp_mm.synthetic.captions_v3.caption_v3`)."""
    named = _noisy(cls, rng)
    wording = _Wording(
        (_TAIL if is_tail('shape', named.shape) else _HEAD).shape_rates,
        (_TAIL if is_tail('colour', named.colour) else _HEAD).colour_synonym_rate)
    return caption_v3(named, rng, domain, kind, wording)


def tail_share(classes: Sequence[WorldClass], kind: str) -> Tuple[float, float]:
    """(share of ``classes`` with a tail ``kind`` value, stream probability of drawing one)."""
    tail = np.array([is_tail(kind, getattr(c, kind)) for c in classes])
    return float(tail.mean()), float(class_weights(classes)[tail].sum())
