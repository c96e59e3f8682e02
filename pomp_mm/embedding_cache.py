"""On-disk cache of class-embedding tables.

A table is stored under a key made of everything that determines its numbers: the CLIP model id,
a content hash of the text weights, the prompt fingerprint (or the templates) and the class
names in order. A second call with the same inputs is a file read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, Optional, Sequence

import torch

from .fileio import atomic_torch_save

__all__ = ['EmbeddingCache', 'default_cache_dir']

logger = logging.getLogger(__name__)


def default_cache_dir() -> str:
    """``$POMP_MM_CACHE``, else ``$XDG_CACHE_HOME/pomp_mm``, else ``~/.cache/pomp_mm``."""
    if os.environ.get('POMP_MM_CACHE'):
        return os.environ['POMP_MM_CACHE']
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'pomp_mm')


class EmbeddingCache:
    """Class-embedding tables in ``folder/embeddings/<key>.pt``.

    Args:
        folder: Cache root; see :func:`default_cache_dir`.
    """

    def __init__(self, folder: str):
        self.folder = os.path.join(os.path.expanduser(folder), 'embeddings')

    @staticmethod
    def key(names: Sequence[str], **parts: Any) -> str:
        h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
        h.update(b'\0'.join(n.encode() for n in names))
        h.update(str(len(names)).encode())
        return h.hexdigest()[:32]

    def path(self, key: str) -> str:
        return os.path.join(self.folder, f'{key}.pt')

    def get(self, key: str, names: Sequence[str]) -> Optional[torch.Tensor]:
        path = self.path(key)
        if not os.path.isfile(path):
            return None
        try:
            entry = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:  # a half-written or foreign file is a miss, not a crash
            logger.warning('ignoring unreadable embedding cache entry %s: %s', path, err)
            return None
        emb = entry.get('embeddings') if isinstance(entry, dict) else None
        if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != len(names):
            logger.warning('ignoring embedding cache entry %s: not a [%d, D] table', path,
                           len(names))
            return None
        if entry.get('names') != list(names):
            logger.warning('embedding cache entry %s is for other class names; recomputing', path)
            return None
        return emb

    def put(self, key: str, names: Sequence[str], embeddings: torch.Tensor,
            meta: Optional[Dict[str, Any]] = None) -> str:
        path = self.path(key)
        atomic_torch_save({'names': list(names), 'embeddings': embeddings.detach().cpu().float(),
                            'meta': dict(meta or {})}, path)
        return path
