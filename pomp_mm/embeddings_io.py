"""Class-embedding tables as ``.npy`` files (Detic's ``ZeroShotClassifier`` format) with a JSON
sidecar.

``F.npy`` holds a C x D float32 array (one row per class); ``F.json`` beside it records the class
names, the CLIP model, the prompt and its fingerprint, and whether rows are L2-normalised.
Detic's own files (often float16, no sidecar) load too; a sidecar, when present, is checked.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .fileio import atomic_write
from .vocabulary import first_difference

__all__ = ['save_embeddings', 'load_embeddings', 'sidecar_path']

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = 'pomp_mm.embeddings'


def sidecar_path(npy_path: str) -> str:
    """``F.json`` for ``F.npy``."""
    root, ext = os.path.splitext(npy_path)
    return (root if ext == '.npy' else npy_path) + '.json'


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype=np.float32).tobytes()).hexdigest()


def save_embeddings(path: str, embeddings: torch.Tensor, names: Sequence[str],
                    **meta: Any) -> Tuple[str, str]:
    """Write ``path`` (C x D float32) and its sidecar atomically.

    Args:
        path: Output ``.npy`` path.
        embeddings: [C, D] tensor.
        names: The C class names, in row order.
        **meta: Extra sidecar fields (``clip_model``, ``prompt``, ``prompt_fingerprint``, ...).

    Returns:
        The ``.npy`` and sidecar paths.
    """
    if not path.endswith('.npy'):
        raise ValueError(f'embedding file must end with .npy, got {path!r}')
    arr = embeddings.detach().to('cpu', torch.float32).numpy()
    if arr.ndim != 2 or arr.shape[0] != len(names):
        raise ValueError(f'embeddings of shape {arr.shape} do not match {len(names)} names')
    norms = np.linalg.norm(arr, axis=1)
    side = {
        'format': SIDECAR_FORMAT, 'version': 1, 'num_classes': int(arr.shape[0]),
        'dim': int(arr.shape[1]), 'dtype': 'float32', 'layout': 'classes x dim',
        'normalized': bool(np.allclose(norms, 1.0, atol=1e-4)), 'class_names': list(names),
        'sha256': _digest(arr), **meta
    }
    atomic_write(path, lambda f: np.save(f, arr))
    side_path = sidecar_path(path)
    atomic_write(side_path, lambda f: f.write(json.dumps(side, indent=1).encode()))
    return path, side_path


def load_embeddings(path: str, names: Optional[Sequence[str]] = None,
                    dim: Optional[int] = None,
                    normalize: bool = False) -> Tuple[torch.Tensor, Optional[Dict[str, Any]]]:
    """Read a class-embedding table.

    Args:
        path: ``.npy`` file, C x D (float16 or float32).
        names: Expected class names in order; checked against the sidecar when present, and
            against the row count always.
        dim: Expected embedding width.
        normalize: L2-normalise the rows.

    Returns:
        A float32 tensor [C, D] and the sidecar dict (None when there is none).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'embedding file not found: {path!r}')
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2:
        raise ValueError(f'{path!r} holds an array of shape {arr.shape}; expected classes x dim')
    emb = torch.from_numpy(arr.astype(np.float32))
    if names is not None and emb.shape[0] != len(names):
        raise ValueError(f'{path!r} has {emb.shape[0]} rows but the vocabulary has '
                         f'{len(names)} classes')
    side = None
    side_path = sidecar_path(path)
    if os.path.isfile(side_path):
        with open(side_path, encoding='utf-8') as f:
            side = json.load(f)
        if side.get('sha256') not in (None, _digest(arr)):
            # two files, two writes: a crash between them, or the .npy rewritten by another
            # tool, leaves a sidecar describing other numbers; its names cannot be trusted,
            # so rows cannot be checked against the classes the caller names
            if names is not None:
                raise ValueError(f'{path!r} does not match its sidecar {side_path!r} (sha256 '
                                 f'{_digest(arr)}, the sidecar records {side["sha256"]}): '
                                 'the .npy was rewritten without it; export the table again '
                                 'or delete the stale sidecar')
            logger.warning('ignoring sidecar %s: it describes another version of %s', side_path,
                           path)
            side = {}
        stored = side.get('class_names')
        if stored is not None and len(stored) != emb.shape[0]:
            raise ValueError(f'{path!r} has {emb.shape[0]} rows but its sidecar {side_path!r} '
                             f'lists {len(stored)} class names')
        i = None if names is None or stored is None else first_difference(stored, names)
        if i is not None:
            a, b = list(stored), list(names)
            raise ValueError(f'{path!r} was made for other classes: class {i} is '
                             f'{a[i] if i < len(a) else "(none)"!r} in the file, '
                             f'{b[i] if i < len(b) else "(none)"!r} expected')
    side = side or None
    if dim is not None and emb.shape[1] != dim:
        raise ValueError(f'{path!r} has embedding width {emb.shape[1]}, expected {dim}')
    if normalize:
        emb = torch.nn.functional.normalize(emb, dim=-1)
    return emb, side
