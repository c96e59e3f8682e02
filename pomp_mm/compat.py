"""Safe checkpoint loading under torch >= 2.6 (``torch.load(weights_only=True)`` by default).

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch 2.6 that means the
restricted unpickler, which refuses what mmengine itself writes into checkpoints: numpy scalars
and arrays in ``message_hub`` and the ``HistoryBuffer`` log objects, whose statistics methods are
pickled as ``getattr(HistoryBuffer, 'mean')``. :func:`register_mmengine_safe_globals` adds those
exact globals to torch's allow-list (``getattr`` only as a wrapper that resolves the
HistoryBuffer statistics methods and nothing else), so mmengine's own ``load_checkpoint`` and
``--resume`` work while every other global stays refused. Turning weights-only loading off is
never an option here: it executes arbitrary code from the file.
"""
from __future__ import annotations

import importlib
import pickle
import threading
from typing import Any, Callable, List, Tuple, Union

import torch

__all__ = ['mmengine_safe_globals', 'register_mmengine_safe_globals', 'load_with_placeholders']

_NUMPY_GLOBALS = (
    # numpy >= 2 spells its core module numpy._core, numpy 1.x numpy.core
    'numpy._core.multiarray.scalar', 'numpy._core.multiarray._reconstruct',
    'numpy.core.multiarray.scalar', 'numpy.core.multiarray._reconstruct',
    'numpy.dtype', 'numpy.ndarray',
    'numpy.dtypes.Float64DType', 'numpy.dtypes.Float32DType', 'numpy.dtypes.Float16DType',
    'numpy.dtypes.Int64DType', 'numpy.dtypes.Int32DType', 'numpy.dtypes.BoolDType',
)
# Plain containers that optimizer state dicts pickle by reference; building them runs no code
# from the file.
_SAFE_CONTAINERS = {
    'builtins.dict': dict, 'builtins.list': list, 'builtins.set': set,
    'builtins.frozenset': frozenset, 'builtins.tuple': tuple,
    # torch's unpickler only fills real dicts; the default factory is irrelevant to reading
    'collections.defaultdict': lambda *args: {},
}
_registered = False
_lock = threading.Lock()


def _resolve(path: str) -> Any:
    module, _, name = path.rpartition('.')
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to HistoryBuffer's registered statistics methods."""
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = set(HistoryBuffer._statistics_methods) | {'min', 'max', 'mean', 'current'}
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({getattr(obj, "__qualname__", obj)!r}, {name!r}) while loading a '
        'checkpoint: only HistoryBuffer statistics methods are allowed')


def mmengine_safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The exact globals an mmengine checkpoint needs beyond torch's own allow-list."""
    found: List[Union[Callable, Tuple[Callable, str]]] = []
    for path in _NUMPY_GLOBALS:
        obj = _resolve(path)
        if obj is not None:
            found.append((obj, path))
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:
        return found
    found.append(HistoryBuffer)
    found.append((_history_buffer_getattr, 'builtins.getattr'))
    return found


def register_mmengine_safe_globals() -> None:
    """Add :func:`mmengine_safe_globals` to torch's allow-list (idempotent)."""
    global _registered
    with _lock:
        if _registered or not hasattr(torch.serialization, 'add_safe_globals'):
            return
        torch.serialization.add_safe_globals(mmengine_safe_globals())
        _registered = True


class _Placeholder:
    """Inert stand-in for a pickled object whose class we do not allow: keeps its data, runs
    none of its code."""

    _qualname = '?'

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f'<placeholder for {self._qualname}>'


def _placeholder_class(path: str) -> type:
    return type(path.rpartition('.')[2] or 'Placeholder', (_Placeholder,),
                {'_qualname': path, '__module__': __name__})


def load_with_placeholders(path: str, map_location: Union[str, torch.device] = 'cpu') -> Any:
    """``torch.load(weights_only=True)`` where globals outside torch's allow-list (e.g. the
    optimizer and scheduler objects of a Dassl/CoOp checkpoint) become inert placeholders.

    Tensors and plain containers load as usual; placeholder objects only hold the pickled
    arguments and state, so nothing from the file is executed.
    """
    register_mmengine_safe_globals()
    try:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (non-zip) files cannot be scanned; load them strictly
        unknown = []
    allowed = {g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}'
               for g in mmengine_safe_globals()}
    blocked = {'sys', 'os', 'posix', 'nt', 'builtins', 'subprocess'}
    stubs = [(_SAFE_CONTAINERS[g], g) if g in _SAFE_CONTAINERS else (_placeholder_class(g), g)
             for g in unknown
             if g in _SAFE_CONTAINERS or (g not in allowed and g.rpartition('.')[0] not in blocked)]
    with torch.serialization.safe_globals(stubs):
        return torch.load(path, map_location=map_location, weights_only=True)
