"""Class vocabularies: built-in ones read from the libraries that ship them, and user ones.

A :class:`Vocabulary` is an ordered list of classes, each with a stable id (a WordNet id for
ImageNet, the toolkit's raw class name elsewhere) and a display name, the text that goes into
the prompt. Name cleaning is explicit and shared by all sources: see :func:`clean_name`.
"""
from __future__ import annotations

import logging
import os
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = [
    'Vocabulary', 'clean_name', 'load_vocabulary', 'builtin_vocabularies', 'parse_vocabulary',
    'first_difference', 'register_vocabulary'
]

logger = logging.getLogger(__name__)


def clean_name(raw: str) -> str:
    """Turn a raw class label into prompt text.

    Underscores become spaces and runs of whitespace collapse to one space; case and other
    punctuation (``bow (weapon)``, ``wall-concrete``) are kept, since CLIP's tokenizer
    lower-cases anyway and the punctuation disambiguates.
    """
    return re.sub(r'\s+', ' ', raw.replace('_', ' ')).strip()


def first_difference(a: Sequence[str], b: Sequence[str]) -> Optional[int]:
    """Index of the first entry where two class lists differ (the shorter length when one is
    a prefix of the other), or None when they are equal."""
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return None if i == len(a) == len(b) else i


def first_lemma(lemmas: str) -> str:
    """First entry of a WordNet lemma list such as ``'organism, being'``."""
    return lemmas.split(',')[0]


@dataclass(frozen=True)
class Vocabulary:
    """An ordered class vocabulary.

    Args:
        names: Display names, the text put into prompts.
        ids: Stable ids, one per name (defaults to the names).
        source: Where the vocabulary came from (built-in name, file path or ``'list'``).
    """

    names: Tuple[str, ...]
    ids: Tuple[str, ...] = field(default=())
    source: str = 'list'

    def __post_init__(self) -> None:
        names = tuple(self.names)
        ids = tuple(self.ids) if self.ids else names
        if not names:
            raise ValueError(f'vocabulary {self.source!r} is empty: give at least one class name')
        if len(ids) != len(names):
            raise ValueError(f'vocabulary {self.source!r}: {len(ids)} ids for {len(names)} names')
        for i, name in enumerate(names):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f'vocabulary {self.source!r}: class {i} has an empty or '
                                 f'non-string name {name!r}')
        object.__setattr__(self, 'names', names)
        object.__setattr__(self, 'ids', ids)
        # Built-in lists have known lemma collisions (ids keep them apart): no need to shout.
        _warn_duplicates(names, self.source,
                         logging.INFO if self.source in _BUILTINS else logging.WARNING)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __getitem__(self, index: int) -> str:
        return self.names[index]


def _warn_duplicates(names: Sequence[str], source: str, level: int) -> None:
    seen: Dict[str, int] = {}
    dups = []
    for i, name in enumerate(names):
        key = name.lower()
        if key in seen:
            dups.append(f'{name!r} (classes {seen[key]} and {i})')
        else:
            seen[key] = i
    if dups:
        shown = ', '.join(dups[:5]) + (f' and {len(dups) - 5} more' if len(dups) > 5 else '')
        logger.log(level, 'vocabulary %r has %d duplicate name(s), kept in order: %s', source,
                   len(dups), shown)


# --------------------------------------------------------------------------------------------
# Built-in vocabularies
# --------------------------------------------------------------------------------------------

def _timm_info(filename: str) -> List[str]:
    data = pkgutil.get_data('timm.data', f'_info/{filename}')
    if data is None:
        raise FileNotFoundError(f'timm does not ship _info/{filename}; upgrade timm (>= 0.9)')
    return data.decode('utf-8').splitlines()


def _imagenet_from_synsets(synset_file: str, source: str) -> Vocabulary:
    lemmas = dict(line.split('\t', 1) for line in _timm_info('imagenet_synset_to_lemma.txt'))
    wnids = [w.strip() for w in _timm_info(synset_file) if w.strip()]
    missing = [w for w in wnids if w not in lemmas]
    if missing:
        raise KeyError(f'timm lemma file lacks {len(missing)} synsets of {synset_file}, '
                       f'e.g. {missing[:3]}')
    names = [clean_name(first_lemma(lemmas[w])) for w in wnids]
    return Vocabulary(tuple(names), tuple(wnids), source)


def _imagenet21k() -> Vocabulary:
    return _imagenet_from_synsets('imagenet22k_synsets.txt', 'imagenet21k')


def _imagenet21k_p() -> Vocabulary:
    return _imagenet_from_synsets('imagenet21k_miil_w21_synsets.txt', 'imagenet21k-p')


def _imagenet1k() -> Vocabulary:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    wnids = [w.strip() for w in _timm_info('imagenet_synsets.txt')]
    return Vocabulary(tuple(IMAGENET_CLASSNAMES), tuple(wnids), 'imagenet1k')


def _from_metainfo(module: str, dataset: str, source: str) -> Vocabulary:
    """Classes from an OpenMMLab dataset's METAINFO, importing the toolkit only when asked."""
    import importlib
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f'built-in vocabulary {source!r} comes from {module}, which is not '
                          f'installed ({err}); install pomp_mm[mmdet] / pomp_mm[mmseg]') from err
    raw = list(getattr(mod, dataset).METAINFO['classes'])
    # Open-vocabulary models learn background separately (cat_bg); it is not a class name.
    raw = [c for c in raw if c.lower() != 'background']
    return Vocabulary(tuple(clean_name(c) for c in raw), tuple(raw), source)


def _metainfo(module: str, dataset: str, source: str) -> Callable[[], Vocabulary]:
    return lambda: _from_metainfo(module, dataset, source)


_BUILTINS: Dict[str, Callable[[], Vocabulary]] = {
    'imagenet21k': _imagenet21k,
    'imagenet21k-p': _imagenet21k_p,
    'imagenet1k': _imagenet1k,
    'voc': _metainfo('mmseg.datasets', 'PascalVOCDataset', 'voc'),
    'coco': _metainfo('mmdet.datasets', 'CocoDataset', 'coco'),
    'coco-stuff': _metainfo('mmseg.datasets', 'COCOStuffDataset', 'coco-stuff'),
    'ade20k': _metainfo('mmseg.datasets', 'ADE20KDataset', 'ade20k'),
    'pascal-context': _metainfo('mmseg.datasets', 'PascalContextDataset59', 'pascal-context'),
    'lvis': _metainfo('mmdet.datasets', 'LVISV1Dataset', 'lvis'),
    'objects365': _metainfo('mmdet.datasets', 'Objects365V2Dataset', 'objects365'),
}
_CACHE: Dict[str, Vocabulary] = {}


def register_vocabulary(name: str, build: Callable[[], Vocabulary]) -> None:
    """Add a built-in vocabulary: ``build()`` makes it on first :func:`load_vocabulary`
    (how plugins such as the synthetic world add theirs). Re-registering a name replaces it."""
    key = name.lower().replace('_', '-')
    if not key or not callable(build):
        raise ValueError(f'register_vocabulary needs a name and a callable, got {name!r}, '
                         f'{build!r}')
    _BUILTINS[key] = build
    _CACHE.pop(key, None)


def _is_builtin(key: str) -> bool:
    if key not in _BUILTINS:
        from .plugins import load_plugins
        load_plugins()
    return key in _BUILTINS


def builtin_vocabularies() -> List[str]:
    """Names accepted by :func:`load_vocabulary` (plugins' included)."""
    from .plugins import load_plugins
    load_plugins()
    return sorted(_BUILTINS)


def load_vocabulary(name: str) -> Vocabulary:
    """A built-in vocabulary by name (see :func:`builtin_vocabularies`)."""
    key = name.lower().replace('_', '-')
    if not _is_builtin(key):
        raise KeyError(f'unknown built-in vocabulary {name!r}; known: '
                       f'{", ".join(builtin_vocabularies())}')
    if key not in _CACHE:
        _CACHE[key] = _BUILTINS[key]()
    return _CACHE[key]


def _read_text_file(path: str) -> Vocabulary:
    raw = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                raw.append(line)
    # ids keep the spelling datasets use ('low_vegetation'); names are the prompt text
    return Vocabulary(tuple(clean_name(n) for n in raw), tuple(raw), path)


VocabularyLike = Union[Vocabulary, str, Iterable[str]]


def parse_vocabulary(spec: VocabularyLike) -> Vocabulary:
    """Resolve anything a user may pass as a vocabulary.

    Accepts a :class:`Vocabulary`; a list of names; the name of a built-in vocabulary; a path to
    a text file (one class per line, ``#`` starts a comment); or a ``' . '``-separated string
    (``'cat . sofa . window'``, the MMDetection demo convention).
    """
    if isinstance(spec, Vocabulary):
        return spec
    if isinstance(spec, str):
        if os.path.isfile(spec):
            return _read_text_file(spec)
        if ' . ' in spec or spec.rstrip().endswith(' .'):
            parts = [clean_name(p) for p in spec.split(' . ')]
            parts = [p.rstrip(' .').strip() for p in parts]
            return Vocabulary(tuple(p for p in parts if p), (), 'text')
        key = spec.lower().replace('_', '-')
        if _is_builtin(key):
            return load_vocabulary(key)
        if os.sep in spec or os.path.splitext(spec)[1].lower() in ('.txt', '.csv', '.json'):
            raise FileNotFoundError(f'vocabulary file not found: {spec!r}')
        raise ValueError(f'vocabulary {spec!r} is neither a file, a " . "-separated list nor a '
                         f'built-in vocabulary (known: {", ".join(builtin_vocabularies())}); '
                         f'for a single class write {spec + " ."!r}')
    raw = list(spec)
    names = tuple(clean_name(n) if isinstance(n, str) else n for n in raw)
    ids = tuple(n.strip() if isinstance(n, str) else n for n in raw)
    return Vocabulary(names, ids, 'list')
