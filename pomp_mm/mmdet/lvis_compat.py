"""Let the LVIS API's evaluation run under numpy >= 1.24.

``lvis`` 0.5.3 and ``mmlvis`` 10.5.3 (the LVIS APIs on PyPI, both imported as ``lvis``) call
``np.float`` in ``LVISEval.accumulate``; numpy 1.24 removed that alias, so mmdet's
``LVISMetric`` crashes under the numpy 2 this stack installs. Rather than edit installed files
or put ``float`` back on numpy for everyone, :func:`patch_lvis_eval` gives only the
``lvis.eval`` module a numpy view that also has ``float`` (the builtin, which is what the
alias meant).
"""
from __future__ import annotations

import types

import numpy as np

__all__ = ['patch_lvis_eval']


class _NumpyWithFloatAlias(types.ModuleType):
    """numpy, seen through a module that adds the removed ``np.float`` alias."""

    float = float

    def __init__(self) -> None:
        super().__init__('numpy')

    def __getattr__(self, name: str):
        return getattr(np, name)


def patch_lvis_eval() -> bool:
    """Patch ``lvis.eval`` if it is installed and needs it; True when patched."""
    if hasattr(np, 'float'):
        return False
    try:
        import lvis.eval as lvis_eval
    except ImportError:
        return False
    if getattr(lvis_eval, 'np', None) is not np:
        return isinstance(getattr(lvis_eval, 'np', None), _NumpyWithFloatAlias)
    lvis_eval.np = _NumpyWithFloatAlias()
    return True
