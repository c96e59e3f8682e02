"""Atomic file writes: a crash or a full disk never leaves a truncated file in place of a good
one, since data goes to a temporary file beside the target and is renamed over it."""
from __future__ import annotations

import os
import tempfile
from typing import IO, Any, Callable

import torch

__all__ = ['atomic_write', 'atomic_torch_save']


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> str:
    """Call ``write(f)`` on a temporary binary file, then rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path), suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_torch_save(obj: Any, path: str) -> str:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))
