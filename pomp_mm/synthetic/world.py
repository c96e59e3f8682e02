"""The synthetic world's classes: compositions of four attributes with English names.

A class is ``(pattern, colour, shape, background)``, named ``'striped red star on sand'``.
All :data:`PATTERNS` x :data:`COLOURS` x :data:`SHAPES` x :data:`BACKGROUNDS` compositions
(24,000) form the built-in vocabulary ``'synthetic-24k'``, the ImageNet-21K analogue. The
order is fixed (pattern slowest, background fastest), so a class index means the same class
on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

__all__ = ['COLOURS', 'SHAPES', 'PATTERNS', 'BACKGROUNDS', 'ATTRIBUTES', 'WorldClass',
           'all_classes', 'class_at', 'class_index', 'parse_class', 'world_vocabulary',
           'check_attribute',
           'NUM_CLASSES', 'VOCABULARY_NAME']

#: Object colours (RGB). Distinct at 64 px, though neighbours (navy/blue, tan/beige-ish sand)
#: are deliberately confusable, as real categories are.
COLOURS: Dict[str, Tuple[int, int, int]] = {
    'red': (220, 30, 30), 'orange': (245, 130, 20), 'yellow': (240, 220, 30),
    'lime': (150, 230, 40), 'green': (30, 140, 40), 'teal': (20, 130, 130),
    'cyan': (40, 210, 230), 'blue': (30, 60, 220), 'navy': (20, 25, 110),
    'purple': (120, 40, 170), 'magenta': (220, 40, 200), 'pink': (250, 150, 190),
    'brown': (130, 75, 30), 'maroon': (120, 20, 40), 'olive': (120, 120, 20),
    'tan': (210, 180, 130), 'gray': (128, 128, 128), 'black': (20, 20, 20),
    'white': (245, 245, 245), 'lavender': (180, 160, 240),
}
SHAPES: Tuple[str, ...] = (
    'circle', 'square', 'triangle', 'star', 'heart', 'cross', 'diamond', 'hexagon', 'pentagon',
    'crescent', 'arrow', 'oval', 'rectangle', 'octagon', 'trapezoid', 'semicircle', 'kite',
    'parallelogram', 'chevron', 'bolt')
PATTERNS: Tuple[str, ...] = (
    'plain', 'striped', 'dotted', 'checkered', 'gridded', 'hollow', 'zigzag', 'ringed',
    'speckled', 'shaded')
BACKGROUNDS: Tuple[str, ...] = ('sand', 'grass', 'water', 'snow', 'bricks', 'wood')
ATTRIBUTES: Dict[str, Tuple[str, ...]] = {
    'pattern': PATTERNS, 'colour': tuple(COLOURS), 'shape': SHAPES, 'background': BACKGROUNDS}
NUM_CLASSES = len(PATTERNS) * len(COLOURS) * len(SHAPES) * len(BACKGROUNDS)
VOCABULARY_NAME = 'synthetic-24k'


def check_attribute(kind: str, value: str) -> str:
    """``value`` if it is a known attribute of ``kind``, else a ValueError naming it."""
    if kind not in ATTRIBUTES:
        raise ValueError(f'unknown attribute kind {kind!r}; known: {", ".join(ATTRIBUTES)}')
    if value not in ATTRIBUTES[kind]:
        raise ValueError(f'unknown {kind} {value!r}; known: {", ".join(ATTRIBUTES[kind])}')
    return value


@dataclass(frozen=True)
class WorldClass:
    """One composition; ``name`` is the prompt text, ``id`` its folder-safe spelling."""

    pattern: str
    colour: str
    shape: str
    background: str

    def __post_init__(self) -> None:
        for kind in ATTRIBUTES:
            check_attribute(kind, getattr(self, kind))

    @property
    def name(self) -> str:
        return f'{self.pattern} {self.colour} {self.shape} on {self.background}'

    @property
    def id(self) -> str:
        return self.name.replace(' ', '_')

    @property
    def index(self) -> int:
        return class_index(self)


def all_classes() -> List[WorldClass]:
    """The 24,000 classes in vocabulary order."""
    return [WorldClass(p, c, s, b) for p in PATTERNS for c in COLOURS for s in SHAPES
            for b in BACKGROUNDS]


def class_index(cls: WorldClass) -> int:
    """Index of ``cls`` in :func:`all_classes` (computed, no list built)."""
    i = PATTERNS.index(cls.pattern)
    i = i * len(COLOURS) + tuple(COLOURS).index(cls.colour)
    i = i * len(SHAPES) + SHAPES.index(cls.shape)
    return i * len(BACKGROUNDS) + BACKGROUNDS.index(cls.background)


def class_at(index: int) -> WorldClass:
    """The class of vocabulary index ``index``."""
    if not 0 <= int(index) < NUM_CLASSES:
        raise ValueError(f'class index {index!r} is outside 0..{NUM_CLASSES - 1}')
    index, b = divmod(int(index), len(BACKGROUNDS))
    index, s = divmod(index, len(SHAPES))
    p, c = divmod(index, len(COLOURS))
    return WorldClass(PATTERNS[p], tuple(COLOURS)[c], SHAPES[s], BACKGROUNDS[b])


def parse_class(name: str) -> WorldClass:
    """``'striped red star on sand'`` (or its ``_`` spelling) -> :class:`WorldClass`."""
    words = name.replace('_', ' ').split()
    if len(words) != 5 or words[3] != 'on':
        raise ValueError(f'{name!r} is not a class name of the form '
                         "'<pattern> <colour> <shape> on <background>'")
    return WorldClass(words[0], words[1], words[2], words[4])


def world_vocabulary(classes: Optional[Iterable[WorldClass]] = None,
                     source: Optional[str] = None):
    """A :class:`~pomp_mm.vocabulary.Vocabulary` of ``classes`` (default: all 24,000)."""
    from ..vocabulary import Vocabulary
    classes = list(all_classes() if classes is None else classes)
    if not classes:
        raise ValueError('an empty class list has no vocabulary')
    return Vocabulary(tuple(c.name for c in classes), tuple(c.id for c in classes),
                      source or (VOCABULARY_NAME if len(classes) == NUM_CLASSES else 'list'))
