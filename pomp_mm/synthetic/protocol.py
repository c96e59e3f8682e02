"""The experimental protocol of the synthetic world, fixed before any result was seen.

Which classes are held out of everything (CLIP training and prompt pre-training), which 1,000
classes the CoOp baseline trains on, and the downstream evaluation sets with their label
semantics. Everything derives from :data:`PROTOCOL_SEED`; changing it is a new protocol.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from .render import check_domain
from .world import (BACKGROUNDS, COLOURS, NUM_CLASSES, PATTERNS, SHAPES, WorldClass,
                    all_classes, class_at)

__all__ = ['PROTOCOL_SEED', 'EVAL_IMAGE_SEED', 'NUM_HELDOUT', 'EvalSet', 'heldout_classes',
           'pretrain_classes', 'coop_classes', 'eval_sets', 'CROSS_DATASET_SETS',
           'CROSS_DOMAIN_SETS', 'SOURCE_SET', 'subset_classes', 'SceneClass', 'scene_classes',
           'scene_unseen_ids', 'NUM_SCENE_CLASSES', 'NUM_SCENE_UNSEEN']

PROTOCOL_SEED = 2023
#: Seed of every evaluation image (pre-training and CLIP training use other seeds).
EVAL_IMAGE_SEED = 777
NUM_HELDOUT = 100
NUM_COOP = 1000
NUM_SCENE_CLASSES = 20
NUM_SCENE_UNSEEN = 5


def _rng(stream: int) -> np.random.Generator:
    return np.random.default_rng([PROTOCOL_SEED, stream])


@lru_cache(maxsize=None)
def _heldout_indices() -> Tuple[int, ...]:
    return tuple(sorted(_rng(1).choice(NUM_CLASSES, NUM_HELDOUT, replace=False).tolist()))


def heldout_classes() -> List[WorldClass]:
    """The 100 compositions no training of any kind sees (CLIP pairs, prompt pre-training)."""
    return [class_at(i) for i in _heldout_indices()]


def pretrain_classes() -> List[WorldClass]:
    """The 23,900 pre-training classes: all compositions but the held-out ones, in order."""
    held = set(_heldout_indices())
    return [c for i, c in enumerate(all_classes()) if i not in held]


@lru_cache(maxsize=None)
def _coop_indices() -> Tuple[int, ...]:
    pool = np.array([i for i in range(NUM_CLASSES) if i not in set(_heldout_indices())])
    return tuple(_rng(2).choice(pool, NUM_COOP, replace=False).tolist())


def coop_classes() -> List[WorldClass]:
    """The 1,000-class subset of the pre-training classes (the ImageNet-1K analogue), in the
    protocol's random order (its first 200 are the cross-domain sets' classes)."""
    return [class_at(i) for i in _coop_indices()]


def subset_classes(num_classes: int, seed: int = 0) -> List[WorldClass]:
    """``num_classes`` pre-training classes drawn at random (transfer vs vocabulary size)."""
    pool = pretrain_classes()
    if not 1 <= num_classes <= len(pool):
        raise ValueError(f'num_classes must be in 1..{len(pool)}, got {num_classes!r}')
    if num_classes == len(pool):
        return pool
    pick = np.random.default_rng([PROTOCOL_SEED, 3, seed]).choice(len(pool), num_classes,
                                                                     replace=False)
    return [pool[i] for i in sorted(pick.tolist())]


@dataclass(frozen=True)
class EvalSet:
    """A downstream set: class names, and for image ``j`` of class ``k`` the class to draw.

    ``draw(k, rng)`` picks the full composition rendered for label ``k`` (attributes the label
    does not name are random)."""

    name: str
    classnames: Tuple[str, ...]
    draw: Callable[[int, np.random.Generator], WorldClass]
    per_class: int
    domain: str = 'photo'
    semantics: str = ''

    @property
    def chance(self) -> float:
        return 100.0 / len(self.classnames)


def _pick(rng: np.random.Generator, values: Sequence[str]) -> str:
    return values[int(rng.integers(len(values)))]


def _pairs(first: Sequence[str], second: Sequence[str], count: int,
           stream: int) -> List[Tuple[str, str]]:
    pairs = [(a, b) for a in first for b in second]
    pick = _rng(stream).choice(len(pairs), count, replace=False)
    return [pairs[i] for i in sorted(pick.tolist())]


@lru_cache(maxsize=None)
def eval_sets() -> Dict[str, EvalSet]:
    """The downstream sets, none of whose images is used in any training.

    * ``shapes`` (20 classes, 'star'): the shape alone.
    * ``colour-shape`` (100 of 400 pairs, 'red star') and ``pattern-shape`` (100 of 200,
      'striped star'): two attributes, the others random.
    * ``heldout-compositions`` (100): full names of compositions no training saw.
    * ``domain-photo``, ``domain-sketch``, ``domain-noisy``: the first 200 CoOp classes,
      full names, in the default domain (source) and two shifted renderings.
    """
    colours = tuple(COLOURS)
    sets = [
        EvalSet('shapes', SHAPES,
                lambda k, r: WorldClass(_pick(r, PATTERNS), _pick(r, colours), SHAPES[k],
                                        _pick(r, BACKGROUNDS)), 25, semantics='shape'),
    ]
    cs = _pairs(colours, SHAPES, 100, 4)
    sets.append(EvalSet('colour-shape', tuple(f'{c} {s}' for c, s in cs),
                        lambda k, r: WorldClass(_pick(r, PATTERNS), cs[k][0], cs[k][1],
                                                _pick(r, BACKGROUNDS)), 5,
                        semantics='colour + shape'))
    ps = _pairs(PATTERNS, SHAPES, 100, 5)
    sets.append(EvalSet('pattern-shape', tuple(f'{p} {s}' for p, s in ps),
                        lambda k, r: WorldClass(ps[k][0], _pick(r, colours), ps[k][1],
                                                _pick(r, BACKGROUNDS)), 5,
                        semantics='pattern + shape'))
    held = heldout_classes()
    sets.append(EvalSet('heldout-compositions', tuple(c.name for c in held),
                        lambda k, r: held[k], 5, semantics='unseen full compositions'))
    source = coop_classes()[:200]
    for domain in ('photo', 'sketch', 'noisy'):
        sets.append(EvalSet(f'domain-{check_domain(domain)}', tuple(c.name for c in source),
                            lambda k, r: source[k], 3, domain=domain,
                            semantics=f'full compositions, {domain} rendering'))
    return {s.name: s for s in sets}


CROSS_DATASET_SETS = ('shapes', 'colour-shape', 'pattern-shape', 'heldout-compositions')
CROSS_DOMAIN_SETS = ('domain-sketch', 'domain-noisy')
SOURCE_SET = 'domain-photo'


@dataclass(frozen=True)
class SceneClass:
    """An object class of the segmentation / detection scenes: a colour and a shape."""

    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f'{self.colour} {self.shape}'


@lru_cache(maxsize=None)
def scene_classes() -> Tuple[SceneClass, ...]:
    """The 20 scene classes (the VOC analogue): every shape once, each with its own colour."""
    colours = _rng(6).permutation(len(COLOURS))
    names = tuple(COLOURS)
    return tuple(SceneClass(names[int(c)], shape) for shape, c in zip(SHAPES, colours))


@lru_cache(maxsize=None)
def scene_unseen_ids() -> Tuple[int, ...]:
    """Ids of the 5 scene classes left out of segmentation / detection training."""
    return tuple(sorted(_rng(7).choice(NUM_SCENE_CLASSES, NUM_SCENE_UNSEEN,
                                       replace=False).tolist()))
