"""Prompt checkpoints: pomp_mm's own format and the official POMP / CoOp ``.pth.tar`` files.

Our format is a small ``torch.save`` dict (kilobytes)::

    {'format': 'pomp_mm.prompt', 'version': 1, 'ctx': Tensor, 'meta': {...}}

with ``meta`` holding only plain Python values (so it loads with ``weights_only=True``): CLIP
model id, width, n_ctx, class-token position, class names for class-specific context, training
vocabulary name and size, loss settings and the pomp_mm version.

The official code (Dassl trainer) saves ``{'state_dict': {'ctx': ..., 'token_prefix': ...,
'token_suffix': ...}, 'epoch': ..., 'optimizer': ..., 'scheduler': ...}``; only ``ctx`` is read.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch

from .compat import load_with_placeholders
from .fileio import atomic_torch_save
from .version import __version__

__all__ = ['PromptCheckpoint', 'save_prompt', 'load_prompt', 'FORMAT', 'FORMAT_VERSION']

FORMAT = 'pomp_mm.prompt'
FORMAT_VERSION = 1


@dataclass
class PromptCheckpoint:
    """A learned prompt and what it was learned for.

    Attributes:
        ctx: Context vectors [n_ctx, width] or, class-specific, [C, n_ctx, width].
        meta: Metadata (see module docstring); official checkpoints get what can be inferred.
        path: File it was read from, if any.
    """

    ctx: torch.Tensor
    meta: Dict[str, Any] = field(default_factory=dict)
    path: Optional[str] = None

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[-2]

    @property
    def width(self) -> int:
        return self.ctx.shape[-1]

    @property
    def class_token_position(self) -> str:
        return self.meta.get('class_token_position', 'end')

    def fingerprint(self) -> str:
        """Content hash of the context vectors and the settings that change their meaning."""
        h = hashlib.sha256(self.ctx.detach().to('cpu', torch.float32).contiguous().numpy())
        h.update(self.class_token_position.encode())
        h.update(repr(self.meta.get('csc_names')).encode())
        return h.hexdigest()[:16]


def save_prompt(path: str, ctx: torch.Tensor, **meta: Any) -> str:
    """Save a prompt in pomp_mm's format, atomically.

    Args:
        path: Output file.
        ctx: Context vectors.
        **meta: Metadata; ``clip_model``, ``class_token_position``, ``train_vocabulary``,
            ``train_vocabulary_size``, ``loss`` (dict) and ``csc_names`` are the usual keys.
            Values must be plain Python (str, int, float, bool, None, list, dict).

    Returns:
        ``path``.
    """
    ctx = ctx.detach().to('cpu', torch.float32).contiguous()
    meta = dict(meta)
    meta.setdefault('class_token_position', 'end')
    meta.update(width=int(ctx.shape[-1]), n_ctx=int(ctx.shape[-2]), pomp_mm_version=__version__,
                saved_at=time.strftime('%Y-%m-%dT%H:%M:%S%z'))
    atomic_torch_save({'format': FORMAT, 'version': FORMAT_VERSION, 'ctx': ctx, 'meta': meta},
                       path)
    return path


def load_prompt(path: str) -> PromptCheckpoint:
    """Read a prompt checkpoint in pomp_mm's format or the official POMP / CoOp format.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is no readable torch file or holds no context vectors.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'prompt checkpoint not found: {path!r}')
    # Official Dassl checkpoints carry optimizer/scheduler objects we never use; they load as
    # inert placeholders, so nothing in the file is executed.
    with open(path, 'rb') as f:
        head = f.read(4)
    if not head.startswith((b'PK', b'\x80')):  # torch.save writes a zip, legacy ones a pickle
        raise ValueError(f'{path!r} is not a torch checkpoint (starts with {head!r}; '
                         'torch.save files are zip archives or pickles)')
    try:
        obj = load_with_placeholders(path)
    except (RuntimeError, EOFError, KeyError, ValueError) as err:
        # torch's own messages (a zip central directory, 'KeyError: 101') name no file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f'{path!r} is not a readable torch checkpoint (truncated, or not '
                         f'saved by torch.save): {reason[:200]}') from err
    if isinstance(obj, dict) and obj.get('format') == FORMAT:
        if obj.get('version', 0) > FORMAT_VERSION:
            raise ValueError(f'{path!r} is prompt format version {obj["version"]}; this pomp_mm '
                             f'reads up to {FORMAT_VERSION}: upgrade pomp_mm')
        # copied: the load is memory-mapped
        return PromptCheckpoint(obj['ctx'].to(torch.float32, copy=True),
                                dict(obj.get('meta', {})), path)
    state = obj.get('state_dict', obj) if isinstance(obj, dict) else None
    if isinstance(state, dict):  # DDP / whole-model saves prefix the prompt learner's keys
        state = {_strip_prefixes(k): v for k, v in state.items()}
    ctx = state.get('ctx') if isinstance(state, dict) else None
    if not isinstance(ctx, torch.Tensor) or ctx.dim() not in (2, 3):
        keys = sorted(state)[:10] if isinstance(state, dict) else type(obj).__name__
        raise ValueError(f'{path!r} holds no prompt context vectors (looked for '
                         f"state_dict['ctx']; found {keys})")
    other = sorted(k for k in state if k.startswith(_IMAGE_CONDITIONED_KEYS))
    if other:
        raise ValueError(f'{path!r} is not a CoOp/POMP prompt: it also holds {other[:3]}, the '
                         'image-conditioned parts of a CoCoOp / MaPLe prompt learner, which a '
                         'context-vector prompt cannot reproduce')
    # Dassl files do not record the class-token position; the official run names carry it
    # ('..._ctpend_seed42.pth.tar'). PompTextEncoder(class_token_position=...) overrides.
    found = re.search(r'ctp(end|middle|front)', os.path.basename(path))
    meta = {'source_format': 'official',
            'class_token_position': found.group(1) if found else 'end',
            'class_token_position_from': 'file name' if found else 'default',
            'width': int(ctx.shape[-1]), 'n_ctx': int(ctx.shape[-2])}
    # ... and the CLIP ('vit_b32_ep5_...'): said in a width mismatch, never checked
    arch = re.match(r'vit_([bl])(\d+)_', os.path.basename(path))
    if arch:
        meta.update(clip_model=f'ViT-{arch.group(1).upper()}/{arch.group(2)}',
                    clip_model_from='file name')
    if isinstance(obj, dict) and isinstance(obj.get('epoch'), int):
        meta['epoch'] = obj['epoch']
    return PromptCheckpoint(ctx.to(torch.float32, copy=True), meta, path)


def _strip_prefixes(key: str) -> str:
    for prefix in ('module.', 'prompt_learner.'):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


# State-dict prefixes of prompt learners whose prompt is more than context vectors
_IMAGE_CONDITIONED_KEYS = ('meta_net.', 'compound_prompts', 'proj.')
