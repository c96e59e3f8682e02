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
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from .fileio import atomic_torch_save

__all__ = ['EmbeddingCache', 'TableMemo', 'default_cache_dir']

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


class TableMemo:
    """The last class-embedding table in memory, valid while its vocabulary object and the
    prompt context it was computed with are unchanged."""

    def __init__(self):
        self._entry: Optional[Tuple[Any, Any, Any, torch.Tensor]] = None

    def clear(self) -> None:
        self._entry = None

    @staticmethod
    def _key(vocabulary: Any, learner: Optional[torch.nn.Module], device: torch.device):
        # Vocabulary objects are immutable and replaced on change, so their id (kept alive by
        # the memo itself, as the learner's) identifies the class list without hashing every
        # name per call.
        return id(vocabulary), id(learner), device

    @staticmethod
    def _ctx_state(learner: Optional[torch.nn.Module]):
        if learner is None:
            return None
        ctx = learner.ctx
        return ctx._version, ctx.detach().clone() if ctx.requires_grad else None

    def get(self, vocabulary: Any, learner: Optional[torch.nn.Module],
            device: torch.device) -> Optional[torch.Tensor]:
        """The remembered table, or None when it is missing or stale."""
        if self._entry is None or self._entry[0] != self._key(vocabulary, learner, device):
            return None
        state = self._entry[2]
        if learner is None or state is None:
            return self._entry[3] if learner is None and state is None else None
        # A trainable context is compared by value (fused optimizers change it without bumping
        # its version); a frozen one changes only through load_state_dict, which clears the
        # memo, or in-place writes, which bump the version (no device sync per call).
        version, value = state
        ctx = learner.ctx
        if ctx.requires_grad:
            current = value is not None and torch.equal(value, ctx)
        else:
            current = version == ctx._version
        return self._entry[3] if current else None

    def put(self, vocabulary: Any, learner: Optional[torch.nn.Module], device: torch.device,
            table: torch.Tensor) -> torch.Tensor:
        """Remember ``table`` (detached) for this vocabulary and context; returns it."""
        table = table.detach()
        # holding the vocabulary and learner keeps their ids from being reused by new objects
        self._entry = (self._key(vocabulary, learner, device), (vocabulary, learner),
                       self._ctx_state(learner), table)
        return table
