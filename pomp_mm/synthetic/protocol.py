"""The experimental protocol of the synthetic world, fixed before any result was seen.

Which classes are held out of everything (CLIP training and prompt pre-training), which 1,000
classes the CoOp baseline trains on, and the downstream evaluation sets with their label
semantics. Everything derives from :data:`PROTOCOL_SEED`; changing it is a new protocol.

Two versions of the evaluation sets (:data:`PROTOCOLS`): ``v2`` (7 sets of 500-600 images, the
v1/v2 worlds' numbers) and ``v3`` (the current one: every set large enough that a paired class
bootstrap separates methods a point apart; docs/synthetic_world.md). The held-out, pre-training
and CoOp classes are the same in both.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from .render import check_domain
from .world import (BACKGROUNDS, COLOURS, NUM_CLASSES, PATTERNS, SHAPES, WorldClass,
                    all_classes, class_at)

__all__ = ['PROTOCOL_SEED', 'EVAL_IMAGE_SEED', 'NUM_HELDOUT', 'EvalSet', 'heldout_classes',
           'pretrain_classes', 'coop_classes', 'eval_sets', 'CROSS_DATASET_SETS',
           'CROSS_DOMAIN_SETS', 'SOURCE_SET', 'subset_classes', 'PROTOCOLS', 'PROTOCOL',
           'check_protocol', 'check_per_class', 'cross_dataset_sets', 'custom_eval_set',
           'SceneClass', 'scene_classes', 'scene_unseen_ids', 'NUM_SCENE_CLASSES',
           'NUM_SCENE_UNSEEN']

PROTOCOL_SEED = 2023
#: Versions of the evaluation sets; :data:`PROTOCOL` is the current one.
PROTOCOLS = ('v2', 'v3')
PROTOCOL = 'v3'
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
    does not name are random). ``offset`` keeps the image indices of different sets apart."""

    name: str
    classnames: Tuple[str, ...]
    draw: Callable[[int, np.random.Generator], WorldClass]
    per_class: int
    domain: str = 'photo'
    semantics: str = ''
    offset: int = 0

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


def check_protocol(version: str) -> str:
    if version not in PROTOCOLS:
        raise ValueError(f'unknown protocol version {version!r}; choose from {PROTOCOLS}')
    return version


def _random_class(r: np.random.Generator, **fixed: str) -> WorldClass:
    """A composition with the ``fixed`` attributes and the others drawn from ``r`` (in the
    order pattern, colour, shape, background, so v2's images stay the same)."""
    values = {kind: fixed[kind] if kind in fixed else _pick(r, pool)
              for kind, pool in (('pattern', PATTERNS), ('colour', tuple(COLOURS)),
                                 ('shape', SHAPES), ('background', BACKGROUNDS))}
    return WorldClass(**values)


def _v2_sets() -> List[EvalSet]:
    colours = tuple(COLOURS)
    sets = [EvalSet('shapes', SHAPES, lambda k, r: _random_class(r, shape=SHAPES[k]), 25,
                    semantics='shape')]
    cs = _pairs(colours, SHAPES, 100, 4)
    sets.append(EvalSet('colour-shape', tuple(f'{c} {s}' for c, s in cs),
                        lambda k, r: _random_class(r, colour=cs[k][0], shape=cs[k][1]), 5,
                        semantics='colour + shape'))
    ps = _pairs(PATTERNS, SHAPES, 100, 5)
    sets.append(EvalSet('pattern-shape', tuple(f'{p} {s}' for p, s in ps),
                        lambda k, r: _random_class(r, pattern=ps[k][0], shape=ps[k][1]), 5,
                        semantics='pattern + shape'))
    held = heldout_classes()
    sets.append(EvalSet('heldout-compositions', tuple(c.name for c in held),
                        lambda k, r: held[k], 5, semantics='unseen full compositions'))
    sets.extend(_domain_sets(3))
    return sets


def _domain_sets(per_class: int) -> List[EvalSet]:
    source = coop_classes()[:200]
    return [EvalSet(f'domain-{check_domain(domain)}', tuple(c.name for c in source),
                    lambda k, r: source[k], per_class, domain=domain,
                    semantics=f'full compositions, {domain} rendering')
            for domain in ('photo', 'sketch', 'noisy')]


def _v3_sets() -> List[EvalSet]:
    colours = tuple(COLOURS)
    cs = [(c, s) for c in colours for s in SHAPES]
    ps = [(p, s) for p in PATTERNS for s in SHAPES]
    sb = [(s, b) for s in SHAPES for b in BACKGROUNDS]
    cps = _triples(1000, 8)
    held = heldout_classes()
    return [
        EvalSet('shapes', SHAPES, lambda k, r: _random_class(r, shape=SHAPES[k]), 100,
                semantics='shape'),
        EvalSet('colour-shape', tuple(f'{c} {s}' for c, s in cs),
                lambda k, r: _random_class(r, colour=cs[k][0], shape=cs[k][1]), 10,
                semantics='colour + shape'),
        EvalSet('pattern-shape', tuple(f'{p} {s}' for p, s in ps),
                lambda k, r: _random_class(r, pattern=ps[k][0], shape=ps[k][1]), 20,
                semantics='pattern + shape'),
        EvalSet('shape-background', tuple(f'{s} on {b}' for s, b in sb),
                lambda k, r: _random_class(r, shape=sb[k][0], background=sb[k][1]), 25,
                semantics='shape + background'),
        EvalSet('colour-pattern-shape', tuple(f'{p} {c} {s}' for p, c, s in cps),
                lambda k, r: _random_class(r, pattern=cps[k][0], colour=cps[k][1],
                                           shape=cps[k][2]), 5,
                semantics='pattern + colour + shape'),
        EvalSet('heldout-compositions', tuple(c.name for c in held), lambda k, r: held[k], 30,
                semantics='unseen full compositions'),
        *_domain_sets(10),
    ]


def _triples(count: int, stream: int) -> List[Tuple[str, str, str]]:
    triples = [(p, c, s) for p in PATTERNS for c in COLOURS for s in SHAPES]
    pick = _rng(stream).choice(len(triples), count, replace=False)
    return [triples[i] for i in sorted(pick.tolist())]


@lru_cache(maxsize=None)
def eval_sets(version: str = PROTOCOL) -> Dict[str, EvalSet]:
    """The downstream sets of protocol ``version``, none of whose images is used in training.

    Both versions: ``shapes`` (20 classes, 'star'), ``colour-shape`` ('red star'),
    ``pattern-shape`` ('striped star'), ``heldout-compositions`` (full names of the 100
    compositions no training saw), ``domain-photo`` / ``-sketch`` / ``-noisy`` (the first 200
    CoOp classes, full names, in the source domain and two shifted renderings). v2 draws 100
    of the 400 colour-shape and 200 pattern-shape pairs with 5 images each; v3 takes every
    pair with 10 and 20 images, adds ``shape-background`` (all 120, 'star on sand') and
    ``colour-pattern-shape`` (1,000 of 4,000, 'striped red star'), and renders 100 images per
    shape, 30 per held-out composition and 10 per domain class.
    """
    sets = {'v2': _v2_sets, 'v3': _v3_sets}[check_protocol(version)]()
    return {s.name: replace(s, offset=i) for i, s in enumerate(sets)}


def custom_eval_set(name: str, classes: Sequence[WorldClass], per_class: int = 10,
                    domain: str = 'photo') -> EvalSet:
    """An evaluation set of any full compositions (label ``k`` = ``classes[k]``, its full
    name), for :func:`~pomp_mm.synthetic.datasets.write_eval_set`."""
    classes = list(classes)
    if not classes:
        raise ValueError('a custom evaluation set needs at least one class')
    bad = [c for c in classes if not isinstance(c, WorldClass)]
    if bad:
        raise ValueError(f'custom evaluation set classes must be WorldClass, got {bad[0]!r} '
                         '(parse a name with pomp_mm.synthetic.world.parse_class)')
    check_per_class(per_class)
    return EvalSet(name, tuple(c.name for c in classes), lambda k, r: classes[k], per_class,
                   domain=check_domain(domain), semantics='full compositions (custom)',
                   offset=len(_v3_sets()))


MAX_PER_CLASS = 1000


def check_per_class(value: int, what: str = 'per_class') -> int:
    """``value`` if it is an image count per class in 1..:data:`MAX_PER_CLASS`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
            not 1 <= int(value) <= MAX_PER_CLASS:
        raise ValueError(f'{what} must be an integer in 1..{MAX_PER_CLASS}, got {value!r}')
    return int(value)


#: v2's cross-dataset sets (the first CLIPs' "mean").
CROSS_DATASET_SETS = ('shapes', 'colour-shape', 'pattern-shape', 'heldout-compositions')
_CROSS_DATASET = {'v2': CROSS_DATASET_SETS,
                  'v3': ('colour-shape', 'pattern-shape', 'shape-background',
                         'colour-pattern-shape', 'heldout-compositions')}
CROSS_DOMAIN_SETS = ('domain-sketch', 'domain-noisy')
SOURCE_SET = 'domain-photo'


def cross_dataset_sets(version: str = PROTOCOL) -> Tuple[str, ...]:
    """The sets whose mean is the cross-dataset score of protocol ``version`` (v3 leaves out
    ``shapes``: 20 classes cannot bound a class-bootstrap interval to a point)."""
    return _CROSS_DATASET[check_protocol(version)]


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
