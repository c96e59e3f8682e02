"""Extensions of pomp_mm that the core does not import: packages listed under the
``pomp_mm.plugins`` entry-point group, imported on the first lookup of a name the core does
not know. On import a plugin registers what it brings with the core's registration functions
(:func:`pomp_mm.clip.register_model_config`, :func:`pomp_mm.vocabulary.register_vocabulary`);
the synthetic world is one (``setup.cfg``)."""
from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import List

__all__ = ['ENTRY_POINT_GROUP', 'load_plugins']

ENTRY_POINT_GROUP = 'pomp_mm.plugins'
logger = logging.getLogger(__name__)
_LOADED: List[str] = []


def load_plugins() -> List[str]:
    """Import every plugin once; returns the modules imported so far. A plugin that fails to
    import is logged with its name and skipped, so one broken extension does not stop the
    core."""
    if _LOADED:
        return list(_LOADED)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            importlib.import_module(ep.value)
        except Exception as err:  # a broken plugin must not take the core down with it
            logger.warning('pomp_mm plugin %r (%s) failed to import: %s', ep.name, ep.value, err)
            continue
        _LOADED.append(ep.value)
    if not _LOADED:
        _LOADED.append('')  # looked once; nothing to load
    return [m for m in _LOADED if m]
