"""Hashes of module weights: what checkpoints, sidecars and caches key on."""
from __future__ import annotations

import hashlib
import weakref
from typing import Dict, Optional

import torch
from torch import nn

__all__ = ['sampled_fingerprint', 'weights_fingerprint']


def weights_fingerprint(module: nn.Module, activations: Optional[nn.Module] = None) -> str:
    """Hash of a module's weights: every tensor's name, shape, dtype and bytes, plus the
    activation types of ``activations`` (default: ``module``), which are no weights but change
    the outputs (GELU vs QuickGELU).

    Each tensor's digest is kept until the tensor changes (in-place update, ``.half()``,
    another device), so asking again costs a walk over the tensors, not a read of the weights.
    """
    h = hashlib.blake2b(digest_size=12)
    h.update(','.join(sorted({type(m).__name__ for m in (activations or module).modules()}))
             .encode())
    for name, t in sorted(module.state_dict(keep_vars=True).items()):
        h.update(f'{name}{tuple(t.shape)}{t.dtype}'.encode())
        h.update(_tensor_digest(t))
    return h.hexdigest()


# id(tensor) -> (weak ref to it, (version, storage address, dtype, device), digest); keyed
# by id because tensors compare element-wise, and dropped when the tensor is freed
_DIGESTS: Dict[int, tuple] = {}


def _tensor_digest(t: torch.Tensor) -> bytes:
    key = (t._version, t.data_ptr(), t.dtype, t.device)
    hit = _DIGESTS.get(id(t))
    if hit is not None and hit[0]() is t and hit[1] == key:
        return hit[2]
    data = t.detach().to('cpu').contiguous().reshape(-1).view(torch.uint8).numpy()
    digest = hashlib.blake2b(data, digest_size=16).digest()
    ident = id(t)
    _DIGESTS[ident] = (weakref.ref(t, lambda _, i=ident: _DIGESTS.pop(i, None)), key, digest)
    return digest


def sampled_fingerprint(module: nn.Module, activations: Optional[nn.Module] = None) -> str:
    """The fingerprint pomp_mm wrote into checkpoints before hashing every weight (shapes,
    dtypes and up to 65,536 evenly spaced values per tensor); only to accept those
    checkpoints on resume."""
    h = hashlib.sha256()
    h.update(','.join(sorted({type(m).__name__ for m in (activations or module).modules()}))
             .encode())
    for name, t in sorted(module.state_dict().items()):
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // 65536)
        h.update(f'{name}{tuple(t.shape)}{t.dtype}'.encode())
        h.update(flat[::step].to('cpu', torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
