"""open_clip model configs known by name: pomp_mm's own (``tiny``) and those plugins bring."""
from __future__ import annotations

import os

__all__ = ['ensure_model_config', 'register_model_config']

#: Where pomp_mm's own open_clip model configs live: ``tiny`` (64-wide, 2-layer towers, for
#: smoke runs, tests and CPU benchmarks with random weights), known to open_clip by name once a
#: pomp_mm function is asked for it.
_MODEL_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'model_configs')


def register_model_config(path: str) -> None:
    """Make the open_clip model config ``path`` (``<model name>.json``) known to open_clip by
    its name, for ``create_model``, ``get_tokenizer`` and pomp_mm (idempotent)."""
    import open_clip
    if not os.path.isfile(path):
        raise FileNotFoundError(f'open_clip model config not found: {path!r}')
    name = os.path.splitext(os.path.basename(path))[0]
    if name not in open_clip.list_models():
        open_clip.add_model_config(path)


def ensure_model_config(name: str) -> None:
    """Make ``name`` known to open_clip if pomp_mm has its config: its own (``'tiny'``), else
    those its plugins register (:mod:`pomp_mm.plugins`), so the name works everywhere."""
    import open_clip
    if name in open_clip.list_models():
        return
    own = os.path.join(_MODEL_CONFIG_DIR, f'{name}.json')
    if os.path.isfile(own):
        register_model_config(own)
    else:
        from .plugins import load_plugins
        load_plugins()
