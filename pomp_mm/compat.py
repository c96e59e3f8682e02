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

import functools
import importlib
import inspect
import math
import pickle
import threading
from typing import Any, Callable, Dict, List, Tuple, Union

import torch

__all__ = ['mmengine_safe_globals', 'register_mmengine_safe_globals', 'load_with_placeholders']

# numpy >= 2 spells its core module numpy._core, numpy 1.x numpy.core
_NUMPY_SCALAR = ('numpy._core.multiarray.scalar', 'numpy.core.multiarray.scalar')
_NUMPY_RECONSTRUCT = ('numpy._core.multiarray._reconstruct', 'numpy.core.multiarray._reconstruct')
_NUMPY_GLOBALS = _NUMPY_SCALAR + (
    'numpy.dtype',
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


_HB_PATH = 'mmengine.logging.history_buffer.HistoryBuffer'
# The data a HistoryBuffer pickles besides its statistics methods (see _SafeHistoryBuffer).
_HB_DATA = ('max_length', '_log_history', '_count_history')
_hb_methods: Dict[str, Callable] = {}  # snapshot at registration; a file cannot extend it


def _history_buffer_getattr(obj: Any, name: str) -> str:
    """``getattr(HistoryBuffer, name)`` as mmengine pickles its statistics methods, answered
    with the *name* only: the methods are never needed (a loaded buffer keeps this process's
    own), and a real function handed to the file would be a gadget (``current`` returns any
    object the file built)."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj in (HistoryBuffer, _safe_history_buffer()) and name in _hb_methods:
        return name
    raise pickle.UnpicklingError(
        f'refusing getattr({getattr(obj, "__qualname__", obj)!r}, {name!r}) while loading a '
        'checkpoint: only HistoryBuffer statistics methods are allowed')


@functools.lru_cache(maxsize=None)
def _safe_history_buffer() -> type:
    """What a checkpoint's ``HistoryBuffer`` unpickles as.

    mmengine's own ``__setstate__`` merges the file's ``statistics_methods`` into the
    class-level method table and the rest of the state into the instance, so a crafted file
    could plant callables there. This subclass keeps only the logged data, takes each state
    once, and pickles as a plain ``HistoryBuffer``.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    class _SafeHistoryBuffer(HistoryBuffer):
        def __setstate__(self, state: Any) -> None:
            if not isinstance(state, dict) or self.__dict__.get('_pomp_loaded'):
                raise pickle.UnpicklingError('a HistoryBuffer takes one dict state')
            self._set_default_statistics()
            self.__dict__.update({k: state[k] for k in _HB_DATA if k in state})
            self.__dict__['_pomp_loaded'] = True

        def __getstate__(self) -> dict:
            state = super().__getstate__()
            return {k: v for k, v in state.items() if k != '_pomp_loaded'}

        def __reduce_ex__(self, protocol: Any) -> tuple:
            return HistoryBuffer, (), self.__getstate__()

    return _SafeHistoryBuffer


class _NdarrayName:
    """What the name ``numpy.ndarray`` resolves to in a checkpoint: only an argument of
    ``_reconstruct``. The real class would let a file build views over another array's
    buffer (NEWOBJ with ``buffer=``) and object arrays over its own bytes."""

    def __new__(cls, *args: Any, **kwargs: Any):
        raise pickle.UnpicklingError('refusing to construct numpy.ndarray from a checkpoint '
                                     '(numpy itself pickles arrays through _reconstruct)')


@functools.lru_cache(maxsize=None)
def _safe_array() -> type:
    """What a checkpoint's numpy arrays unpickle as (an ndarray subclass; see below)."""
    import numpy as np

    class _SafeArray(np.ndarray):
        """An ndarray unpickled from a checkpoint: one state, no object dtype, exact size."""

        def __new__(cls, *args: Any, **kwargs: Any):
            raise pickle.UnpicklingError('arrays in a checkpoint come from _reconstruct only')

        def __setstate__(self, state: Any) -> None:
            if self.__dict__.get('_pomp_loaded'):
                # a second state would free the buffer under views and tensors made from it
                raise pickle.UnpicklingError('an array in a checkpoint takes one state')
            ok = isinstance(state, tuple) and len(state) == 5
            if ok:
                version, shape, dtype, fortran, raw = state
                # plain numbers only: no fields, sub-arrays or objects
                ok = (isinstance(dtype, np.dtype) and dtype.kind in 'biufc' and
                      dtype.names is None and dtype.subdtype is None and
                      isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0
                                                        for n in shape) and
                      isinstance(raw, (bytes, bytearray)) and
                      len(raw) == math.prod(shape) * dtype.itemsize)
            if not ok:
                raise pickle.UnpicklingError('refusing an array state that is not plain '
                                             'numbers of the size its shape says')
            # a fresh dtype from its code: the file's dtype object stays reachable by later
            # states of the file (BUILD on a dtype rewrites it), this one does not
            super().__setstate__((version, shape, np.dtype(dtype.str), bool(fortran),
                                  bytes(raw)))
            self.__dict__['_pomp_loaded'] = True

        def __reduce_ex__(self, protocol: Any) -> tuple:
            return self.view(np.ndarray).__reduce_ex__(protocol)

        def __reduce__(self) -> tuple:
            return self.view(np.ndarray).__reduce__()

    return _SafeArray


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    """numpy's ``_reconstruct`` for the plain arrays numpy pickles (``ndarray, (0,), b'b'``):
    an empty :func:`_safe_array` that the following state fills."""
    import numpy as np
    if subtype not in (_NdarrayName, np.ndarray):
        raise pickle.UnpicklingError(f'refusing _reconstruct of {subtype!r}: only ndarray')
    return np.ndarray.__new__(_safe_array(), (0,), np.uint8)


def mmengine_safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The exact globals an mmengine checkpoint needs beyond torch's own allow-list."""
    found: List[Union[Callable, Tuple[Callable, str]]] = []
    for path in _NUMPY_GLOBALS:
        obj = _resolve(path)
        if obj is not None:
            found.append((obj, path))
    found += [(_safe_reconstruct, path) for path in _NUMPY_RECONSTRUCT]
    found += [(_NdarrayName, 'numpy.ndarray'), (_safe_array(), 'pomp_mm.compat._SafeArray')]
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:
        return found
    if not _hb_methods:
        HistoryBuffer()  # registers mmengine's default statistics on the class
        _hb_methods.update({k: v for k, v in HistoryBuffer._statistics_methods.items()
                            if not k.startswith('_') and inspect.isfunction(v)})
    found.append((_safe_history_buffer(), _HB_PATH))
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
    if not hasattr(torch.serialization, 'safe_globals'):  # torch < 2.5
        return _load_strict(path, map_location)
    register_mmengine_safe_globals()
    try:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (non-zip) files cannot be scanned; load them strictly
        unknown = []
    allowed = {_global_path(g) for g in mmengine_safe_globals()}
    stubs = [(_SAFE_CONTAINERS[g], g) if g in _SAFE_CONTAINERS else (_placeholder_class(g), g)
             for g in unknown
             if g in _SAFE_CONTAINERS or (g not in allowed and
                                          g.rpartition('.')[0] not in _BLOCKED_MODULES)]
    with torch.serialization.safe_globals(stubs):
        return torch.load(path, map_location=map_location, **_mmap_if_zip(path),
                          weights_only=True)


# Globals from these modules are refused outright, never stubbed: they are what a malicious
# pickle calls.
_BLOCKED_MODULES = {'sys', 'os', 'posix', 'nt', 'builtins', 'subprocess'}


def _global_path(g: Union[Callable, Tuple[Callable, str]]) -> str:
    return g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}'


def _mmap_if_zip(path: str) -> dict:
    """``mmap=True`` for zip-format files: an official checkpoint carries hundreds of MB of
    token buffers next to the few KB of context vectors we read."""
    import zipfile
    return {'mmap': True} if zipfile.is_zipfile(path) else {}


def _load_strict(path: str, map_location: Union[str, torch.device]) -> Any:
    """:func:`load_with_placeholders` for torch < 2.5, which cannot stub globals for one load
    (no ``safe_globals``): plain weights-only loading, which refuses files with pickled
    objects (the official Dassl checkpoints keep their scheduler object) with a clear error.
    """
    register_mmengine_safe_globals()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f'{path!r} holds pickled objects that torch {torch.__version__} cannot load without '
            'running code from the file; torch >= 2.5 loads them as inert placeholders. Convert '
            'it once on torch >= 2.5: python -c "import pomp_mm as p; c = p.load_prompt(\'IN\'); '
            'p.save_prompt(\'OUT.pth\', c.ctx, **c.meta)"'
            f' ({err})') from err
