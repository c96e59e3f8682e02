"""Atomic file writes: a crash or a full disk never leaves a truncated file in place of a good
one, since data goes to a temporary file beside the target and is renamed over it."""
from __future__ import annotations

import json
import os
import tempfile
from typing import IO, Any, Callable

import torch

__all__ = ['atomic_write', 'atomic_torch_save', 'atomic_write_json']


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
        # mkstemp makes the file owner-only; give it the mode a plain open() would have
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    try:  # Linux reports it without changing it (other threads may be creating files)
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere reading it means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: str) -> str:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(path: str, obj: Any) -> str:
    """``obj`` as indented UTF-8 JSON through :func:`atomic_write`."""
    data = json.dumps(obj, indent=1, ensure_ascii=False).encode('utf-8')
    return atomic_write(path, lambda f: f.write(data))
