"""Class-list helpers shared by the transform, the segmentor and the hook."""
from __future__ import annotations

import difflib
from typing import Sequence, Tuple, Union


def _names(value: Union[str, Sequence[str]], arg: str) -> Tuple[str, ...]:
    """A tuple of class names, rejecting a bare string (``'sofa'`` would be 4 letters)."""
    if isinstance(value, str):
        raise TypeError(f'{arg} must be a list of class names, got the string {value!r}; '
                        f'write [{value!r}] for a single class')
    names = tuple(value)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(f'{arg} must hold class names (str), got {bad[0]!r}')
    return names


def _index_of(name: str, keys: Sequence[Sequence[str]], what: str, arg: str) -> int:
    """Index of ``name`` in any of the parallel name lists ``keys`` (ids, display names)."""
    for names in keys:
        if name in names:
            return list(names).index(name)
    close = difflib.get_close_matches(name, [n for names in keys for n in names], n=3)
    hint = f'; did you mean {sorted(set(close))}?' if close else ''
    raise ValueError(f'{arg}: class {name!r} is not in {what} ({len(keys[0])} classes: '
                     f'{", ".join(keys[0][:8])}{", ..." if len(keys[0]) > 8 else ""}){hint}')


def _vocabulary_keys(text_encoder) -> Tuple[Tuple[str, ...], ...]:
    """The class-name lists a text encoder embeds, in row order: (ids, display names)."""
    vocab = getattr(text_encoder, 'vocabulary', None)
    if vocab is None:
        raise TypeError(f'{type(text_encoder).__name__} exposes no vocabulary (a list of class '
                        'names); use PompTextEncoder, or give CLIPTextEncoder a vocabulary')
    if hasattr(vocab, 'ids') and hasattr(vocab, 'names'):  # pomp_mm Vocabulary
        return tuple(vocab.ids), tuple(vocab.names)
    names = _names(vocab, 'text_encoder.vocabulary')
    return names, names
