"""Caption grammar v3: captions modelled on web alt-text, the text real CLIPs learn from.

A caption is four slots, each drawn from its own pool (docs/synthetic_world.md gives the reason
for every pool and rate, written down before the v3 CLIP was trained):

* **kind**: what the caption talks about: the object (:data:`KIND_RATES` ``object``), one
  attribute of it only (``terse``), only the scene behind it (``scene``) or nothing in the
  image (``unrelated``).
* **frame**: the words around the object phrase, one of :data:`FRAMES` with Zipf weights, so
  a few frames are common and most are rare; the phrase lands at the start, middle or end.
* **object phrase**: shape word, synonym, hypernym or a generic noun, with colour (or a
  synonym), pattern and background each named with some probability, in varying order.
* **source** and **trailer**: how the text was written (alt text, product title, file name,
  social post) and an optional tail: a weak medium cue ("hand-drawn", "jpg", "low-res") or
  site noise. A few % of medium words belong to another rendering domain.

Every draw comes from the generator passed in, so ``(rng state, class, domain)`` fixes the
caption.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .render import DOMAINS
from .world import WorldClass

__all__ = ['FRAMES', 'FRAME_ZIPF', 'KIND_RATES', 'SOURCE_RATES', 'MEDIUM_NOUNS',
           'MEDIUM_TAGS', 'WRONG_MEDIUM_RATE', 'SHAPE_SYNONYMS', 'SHAPE_HYPERNYMS',
           'COLOUR_SYNONYMS', 'BACKGROUND_PHRASES', 'caption_v3', 'frame_weights']

#: Frames in frequency rank order (``{obj}``: the object phrase, ``{medium}``: a medium noun).
#: The hand prompt's own frame "a photo of a {obj}" is one rare frame among many.
FRAMES: Tuple[str, ...] = (
    '{obj}', '{obj} {medium}', 'a {obj}', '{medium} of a {obj}', 'the {obj}',
    'close up of a {obj}', '{obj} isolated', 'my {obj}', 'check out this {obj}',
    'a {obj} i found', '{obj} icon', 'cute {obj}', '{obj} for sale', 'simple {obj} design',
    'this {obj} though', 'new {obj} just arrived', 'how to draw a {obj}', '{obj} sticker',
    'a {obj} in the middle', 'there is a {obj} here', 'what is this {obj}', 'an old {obj}',
    'day 12: {obj}', 'look at this {obj}', 'just a {obj}', 'random {obj}', '{obj} (detail)',
    '{obj}, front view', 'image of {obj}', 'top view of a {obj}', 'a {medium} of a {obj}',
    'another {obj} for the collection', 'i love this {obj}', 'found this {obj} today',
    'my kid made a {obj}', '{obj} wallpaper', '{obj} logo', '{obj} decal',
    'free {obj} download', 'handmade {obj}', 'vintage {obj}', 'big {obj}', 'small {obj}',
    '{obj} #art', 'my favourite {obj}', 'a picture of a {obj}', 'an image of a {obj}',
    'the {obj} we saw', 'best {obj} ever', 'a {obj} and nothing else', '{obj}?',
    'is this a {obj}', 'a quick {medium} of a {obj}', '{medium}: {obj}', 'untitled ({obj})',
    'lesson 3 - the {obj}', 'a photo of a {obj}', 'a {obj} seen from above',
    'someone left a {obj}', 'the famous {obj}',
)
#: Zipf exponent of the frame ranks (web n-gram frequencies are close to 1).
FRAME_ZIPF = 1.0
#: What a caption names: the object (some attributes), one attribute alone, the scene alone,
#: or nothing that is in the image.
KIND_RATES: Dict[str, float] = {'object': 0.70, 'terse': 0.14, 'scene': 0.10,
                                'unrelated': 0.06}
#: How the text was written.
SOURCE_RATES: Dict[str, float] = {'alt': 0.62, 'title': 0.12, 'filename': 0.12, 'social': 0.14}
#: Nouns for the medium, per rendering domain, in rank order (Zipf-weighted).
MEDIUM_NOUNS: Dict[str, Tuple[str, ...]] = {
    'photo': ('picture', 'image', 'photo', 'shot', 'snapshot', 'photograph', 'pic',
              'stock photo', 'render', 'clipart'),
    'sketch': ('drawing', 'sketch', 'doodle', 'pencil drawing', 'line drawing', 'outline',
               'ink drawing', 'coloring page', 'line art', 'scribble'),
    'noisy': ('blurry picture', 'bad photo', 'blurry photo', 'grainy shot', 'low-res image',
              'fuzzy pic', 'noisy photo', 'out of focus shot', 'cctv still', 'potato photo'),
}
#: Weak medium cues appended as a trailer, per domain.
MEDIUM_TAGS: Dict[str, Tuple[str, ...]] = {
    'photo': ('hd', '4k', 'vector', 'flat design', 'dslr', 'camera', 'high quality',
              'stock', 'clip art', 'bokeh'),
    'sketch': ('hand-drawn', 'pencil', 'ink', 'line art', 'sketchbook', 'outline',
               'doodle', 'graphite', 'drawn by hand', 'linework'),
    'noisy': ('low-res', 'blurry', 'grainy', 'jpeg artifacts', 'out of focus', 'low quality',
              'noisy', 'potato quality', 'fuzzy', 'compressed'),
}
assert set(MEDIUM_NOUNS) == set(MEDIUM_TAGS) == set(DOMAINS)
#: Share of medium words drawn from another domain's pool (mislabelled web images).
WRONG_MEDIUM_RATE = 0.04
_TAG_RATE = 0.25
#: file name extensions say nothing about the medium (any domain)
_EXTENSIONS = ('jpg', 'png', 'webp')
_SITE_TAILS = (' | shop now', ' - free download', ' #design', ' (1)', ' copy', ' - page 2',
               ' | blog', ' lol')
SHAPE_SYNONYMS: Dict[str, Tuple[str, ...]] = {
    'circle': ('disc', 'round'), 'star': ('five-pointed star',), 'heart': ('love heart',),
    'cross': ('plus sign',), 'diamond': ('rhombus', 'lozenge'), 'hexagon': ('six-sided shape',),
    'pentagon': ('five-sided shape',), 'octagon': ('eight-sided shape',),
    'crescent': ('crescent moon', 'moon'), 'arrow': ('pointer',), 'oval': ('ellipse',),
    'rectangle': ('oblong',), 'trapezoid': ('trapezium',), 'semicircle': ('half circle',),
    'bolt': ('lightning bolt',), 'triangle': ('three-sided shape',),
}
SHAPE_HYPERNYMS: Dict[str, Tuple[str, ...]] = {
    'triangle': ('polygon',), 'square': ('polygon', 'quadrilateral'),
    'pentagon': ('polygon',), 'hexagon': ('polygon',), 'octagon': ('polygon',),
    'rectangle': ('quadrilateral',), 'trapezoid': ('quadrilateral',),
    'parallelogram': ('quadrilateral',), 'kite': ('quadrilateral',),
    'diamond': ('quadrilateral',), 'star': ('symbol', 'icon'), 'heart': ('symbol', 'icon'),
    'cross': ('symbol',), 'arrow': ('symbol', 'sign'), 'bolt': ('symbol', 'icon'),
    'crescent': ('symbol',), 'chevron': ('symbol', 'sign'), 'circle': ('round shape',),
    'oval': ('round shape',), 'semicircle': ('round shape',),
}
_GENERIC = ('shape', 'thing', 'object', 'figure')
COLOUR_SYNONYMS: Dict[str, Tuple[str, ...]] = {
    'red': ('crimson', 'scarlet'), 'gray': ('grey',), 'navy': ('navy blue', 'dark blue'),
    'lime': ('lime green',), 'magenta': ('fuchsia',), 'purple': ('violet',),
    'maroon': ('burgundy',), 'cyan': ('aqua',), 'pink': ('rose',), 'lavender': ('lilac',),
    'olive': ('olive green',), 'yellow': ('golden',), 'tan': ('beige',),
    'brown': ('chocolate',), 'teal': ('turquoise',),
}
_PATTERN_NOUNS = {'striped': 'stripes', 'dotted': 'dots', 'checkered': 'checks',
                  'gridded': 'a grid', 'zigzag': 'zigzags', 'ringed': 'rings',
                  'speckled': 'speckles', 'shaded': 'shading'}
BACKGROUND_PHRASES: Dict[str, Tuple[str, ...]] = {
    'sand': ('sand', 'the beach', 'sandy ground', 'desert sand'),
    'grass': ('grass', 'the lawn', 'a meadow', 'green grass'),
    'water': ('water', 'the sea', 'a pool', 'the lake'),
    'snow': ('snow', 'fresh snow', 'a snowy field', 'winter snow'),
    'bricks': ('bricks', 'a brick wall', 'old bricks', 'brickwork'),
    'wood': ('wood', 'a wooden table', 'wood planks', 'the wooden floor'),
}
_PLACES = ('on {}', 'on {}', 'over {}', 'lying on {}', 'against {}')
_SCENE_FRAMES = ('{bg}', '{bg} texture', 'a day at {bg}', 'background: {bg}', 'view of {bg}',
                 'somewhere on {bg}', '{bg} {medium}')
_UNRELATED = ('untitled', 'image 4 of 12', 'new post', 'click to enlarge', 'no description',
              'thumbnail', 'see more', 'my weekend', 'for my mum', 'ok', 'test upload',
              'from the archive')
# Rates of the object phrase (docs give the reasons).
_SHAPE_WORD = {'exact': 0.70, 'synonym': 0.10, 'hypernym': 0.07, 'generic': 0.13}
_COLOUR_RATE, _COLOUR_SYNONYM_RATE = 0.65, 0.2
_PATTERN_RATE, _PATTERN_AS_NOUN = 0.5, 0.25
_BACKGROUND_RATE = 0.4


class _Wording(NamedTuple):
    """How a value is worded: shape-word rates and the colour-synonym rate."""
    shape_rates: Dict[str, float] = _SHAPE_WORD
    colour_synonym_rate: float = _COLOUR_SYNONYM_RATE


def frame_weights() -> np.ndarray:
    """Probability of each of :data:`FRAMES` (Zipf over the rank)."""
    w = 1.0 / np.arange(1, len(FRAMES) + 1) ** FRAME_ZIPF
    return w / w.sum()


def _zipf_pick(rng: np.random.Generator, pool: Sequence[str]) -> str:
    w = 1.0 / np.arange(1, len(pool) + 1)
    return pool[int(rng.choice(len(pool), p=w / w.sum()))]


def _pick(rng: np.random.Generator, pool: Sequence[str]) -> str:
    return pool[int(rng.integers(len(pool)))]


def _draw(rng: np.random.Generator, rates: Dict[str, float]) -> str:
    names = list(rates)
    return names[int(rng.choice(len(names), p=[rates[n] for n in names]))]


def _medium_domain(rng: np.random.Generator, domain: str) -> str:
    if rng.random() < WRONG_MEDIUM_RATE:
        return _pick(rng, [d for d in DOMAINS if d != domain])
    return domain


def _shape_word(rng: np.random.Generator, shape: str,
                rates: Dict[str, float] = _SHAPE_WORD) -> str:
    how = _draw(rng, rates)
    if how == 'synonym' and shape in SHAPE_SYNONYMS:
        return _pick(rng, SHAPE_SYNONYMS[shape])
    if how == 'hypernym' and shape in SHAPE_HYPERNYMS:
        return _pick(rng, SHAPE_HYPERNYMS[shape])
    if how == 'generic':
        return _pick(rng, _GENERIC)
    return shape


def _colour_word(rng: np.random.Generator, colour: str,
                 synonym_rate: float = _COLOUR_SYNONYM_RATE) -> str:
    if colour in COLOUR_SYNONYMS and rng.random() < synonym_rate:
        return _pick(rng, COLOUR_SYNONYMS[colour])
    return colour


def _object_phrase(rng: np.random.Generator, cls: WorldClass, wording: '_Wording') -> str:
    noun = _shape_word(rng, cls.shape, wording.shape_rates)
    colour = (_colour_word(rng, cls.colour, wording.colour_synonym_rate)
              if rng.random() < _COLOUR_RATE else None)
    pattern = cls.pattern if rng.random() < _PATTERN_RATE else None
    if pattern == 'plain' and rng.random() < 0.5:
        pattern = None
    tail = ''
    if pattern in _PATTERN_NOUNS and rng.random() < _PATTERN_AS_NOUN:
        tail, pattern = f' with {_PATTERN_NOUNS[pattern]}', None
    adjectives = [w for w in (pattern, colour) if w]
    order = rng.random()
    if order < 0.3:
        adjectives.reverse()
    if order > 0.9 and adjectives:  # list style: "star, red, striped"
        words = ', '.join([noun] + adjectives) + tail
    else:
        words = ' '.join(adjectives + [noun]) + tail
    if rng.random() < _BACKGROUND_RATE:
        words += ' ' + _pick(rng, _PLACES).format(_pick(rng, BACKGROUND_PHRASES[cls.background]))
    return words


def _terse_phrase(rng: np.random.Generator, cls: WorldClass, wording: '_Wording') -> str:
    """One attribute only: the shape, the colour with a generic noun, or the pattern."""
    which = rng.random()
    if which < 0.5:
        return _shape_word(rng, cls.shape, wording.shape_rates)
    if which < 0.8:
        return f'{_colour_word(rng, cls.colour, wording.colour_synonym_rate)} ' \
            f'{_pick(rng, _GENERIC)}'
    return _PATTERN_NOUNS.get(cls.pattern, cls.pattern)


def _write_as(rng: np.random.Generator, text: str, source: str) -> str:
    if source == 'title':
        return text.title() + (_pick(rng, _SITE_TAILS) if rng.random() < 0.4 else '')
    if source == 'filename':
        sep = '_' if rng.random() < 0.6 else '-'
        stem = sep.join(text.replace(',', '').replace(':', '').split())
        return f'{stem}{sep}{int(rng.integers(1, 999))}.{_pick(rng, _EXTENSIONS)}'
    if source == 'social':
        return text + (_pick(rng, _SITE_TAILS) if rng.random() < 0.3 else '')
    return text + ('.' if rng.random() < 0.4 else '')


def caption_v3(cls: WorldClass, rng: np.random.Generator, domain: str = 'photo',
               kind: Optional[str] = None, wording: _Wording = _Wording()) -> str:
    """A web-like caption of an image of ``cls`` rendered in ``domain`` (``kind`` forces the
    caption kind, for tests; default: drawn by :data:`KIND_RATES`; ``wording``: grammar v4's
    rarer wordings of tail values)."""
    if domain not in MEDIUM_NOUNS:
        raise ValueError(f'unknown domain {domain!r}; choose from {tuple(MEDIUM_NOUNS)}')
    kind = kind or _draw(rng, KIND_RATES)
    if kind not in KIND_RATES:
        raise ValueError(f'unknown caption kind {kind!r}; choose from {tuple(KIND_RATES)}')
    if kind == 'unrelated':
        return _pick(rng, _UNRELATED)
    medium = _zipf_pick(rng, MEDIUM_NOUNS[_medium_domain(rng, domain)])
    if kind == 'scene':
        text = _pick(rng, _SCENE_FRAMES).format(
            bg=_pick(rng, BACKGROUND_PHRASES[cls.background]), medium=medium)
    else:
        phrase = (_object_phrase(rng, cls, wording) if kind == 'object'
                  else _terse_phrase(rng, cls, wording))
        frame = FRAMES[int(rng.choice(len(FRAMES), p=frame_weights()))]
        text = frame.format(obj=phrase, medium=medium)
    if rng.random() < _TAG_RATE:
        text += ', ' + _pick(rng, MEDIUM_TAGS[_medium_domain(rng, domain)])
    return _write_as(rng, text, _draw(rng, SOURCE_RATES))
