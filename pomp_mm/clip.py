"""Building a frozen open_clip model (both towers) and fingerprinting its weights.

Its text half is run for prompts by a tower family of :mod:`pomp_mm.towers`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from typing import Any, Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .fingerprint import sampled_fingerprint, weights_fingerprint
from .model_config import ensure_model_config, register_model_config
from .towers.hf_clip import build_hf_clip, is_hf_spec

__all__ = ['build_clip', 'clip_config', 'clip_model_id', 'ensure_model_config', 'image_features',
           'mmseg_text_state_dict', 'register_model_config', 'resolve_clip_spec',
           'sampled_fingerprint', 'weights_fingerprint']

logger = logging.getLogger(__name__)

ClipSpec = Union[str, Dict[str, Any]]

def resolve_clip_spec(spec: str) -> ClipSpec:
    """Command-line model spec: a ``.json`` open_clip model config file (read into a dict), or an
    open_clip model name (``'ViT-B-16'``, pomp_mm's ``'tiny'``) or a Hugging Face CLIP
    (``'transformers:<hub id or folder>'``, :mod:`pomp_mm.towers.hf_clip`), returned unchanged."""
    if spec.endswith('.json') and not is_hf_spec(spec):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f'CLIP model config not found: {spec!r}')
        with open(spec, encoding='utf-8') as f:
            return json.load(f)
    return spec


def clip_config(name: str) -> Dict[str, Any]:
    """A copy of the open_clip model config registered as ``name`` (e.g. ``'tiny'``), for
    variants such as ``dict(clip_config('tiny'), quick_gelu=True)``."""
    import open_clip
    ensure_model_config(name)
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f'unknown open_clip model {name!r}; see open_clip.list_models()')
    return copy.deepcopy(cfg)


def clip_model_id(clip_model: ClipSpec, pretrained: Optional[str] = None) -> str:
    """A readable id for a model spec, used in checkpoints, sidecars and cache keys."""
    if isinstance(clip_model, str):
        name = clip_model
    else:
        cfg = json.dumps(clip_model, sort_keys=True, default=str)
        name = 'config:' + hashlib.sha256(cfg.encode()).hexdigest()[:12]
    if pretrained:
        tag = os.path.basename(pretrained) if os.path.sep in pretrained else pretrained
        return f'{name}/{tag}'
    return name


_MMSEG_LAYER_KEYS = {
    # mmseg CLIPTextEncoder (mmcv BaseTransformerLayer) -> open_clip ResidualAttentionBlock
    'attentions.0.attn.in_proj_weight': 'attn.in_proj_weight',
    'attentions.0.attn.in_proj_bias': 'attn.in_proj_bias',
    'attentions.0.attn.out_proj.weight': 'attn.out_proj.weight',
    'attentions.0.attn.out_proj.bias': 'attn.out_proj.bias',
    'norms.0.weight': 'ln_1.weight', 'norms.0.bias': 'ln_1.bias',
    'norms.1.weight': 'ln_2.weight', 'norms.1.bias': 'ln_2.bias',
    'ffns.0.layers.0.0.weight': 'mlp.c_fc.weight', 'ffns.0.layers.0.0.bias': 'mlp.c_fc.bias',
    'ffns.0.layers.1.weight': 'mlp.c_proj.weight', 'ffns.0.layers.1.bias': 'mlp.c_proj.bias',
}
_MMSEG_TEXT_KEYS = ('token_embedding.weight', 'positional_embedding', 'text_projection',
                    'logit_scale', 'ln_final.weight', 'ln_final.bias')


def mmseg_text_state_dict(state: Dict[str, torch.Tensor],
                          prefix: str = 'text_encoder.') -> Dict[str, torch.Tensor]:
    """The text tower of an mmseg-format CLIP checkpoint (what SAN configs pass as
    ``pretrained``) as open_clip ``CLIP`` state-dict entries. Returns {} when ``state`` holds
    no mmseg text encoder."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name in _MMSEG_TEXT_KEYS:
            out[name] = value
        elif name.startswith('transformer.'):
            _, index, rest = name.split('.', 2)
            if rest in _MMSEG_LAYER_KEYS:
                out[f'transformer.resblocks.{index}.{_MMSEG_LAYER_KEYS[rest]}'] = value
    return out


def _read_mmseg_text(path: str) -> Dict[str, torch.Tensor]:
    """Text-tower entries of ``path`` if it is an mmseg-format CLIP checkpoint, else {}.

    The file is memory-mapped, so telling the formats apart reads only its index, not the
    weights (open_clip reads those once, for its own formats).
    """
    if path.endswith('.safetensors'):
        return {}
    try:
        state = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:  # legacy (non-zip) files cannot be mapped: read them
        try:
            state = torch.load(path, map_location='cpu', weights_only=True)
        except Exception:  # JIT archives, foreign pickles: not ours to read; open_clip decides
            return {}
    state = state.get('state_dict', state) if isinstance(state, dict) else {}
    if not isinstance(state, dict):
        return {}
    return {k: v.clone() for k, v in mmseg_text_state_dict(state).items()}


def _load_mmseg_text(model: nn.Module, text: Dict[str, torch.Tensor], path: str) -> None:
    target = getattr(model, 'text', model)
    own = {k for k in target.state_dict() if not k.startswith('visual.')}
    missing = sorted(own - set(text))
    if missing:
        raise ValueError(f'mmseg-format checkpoint {path!r} lacks text weights {missing[:5]} '
                         f'({len(missing)} missing); is the model config the same CLIP?')
    if model.logit_scale.ndim != text['logit_scale'].ndim:
        text['logit_scale'] = text['logit_scale'].reshape(model.logit_scale.shape)
    target.load_state_dict(text, strict=False)


def _needs_quick_gelu(name: str, pretrained: Optional[str], mmseg_text: bool) -> bool:
    """Whether weights need QuickGELU that the model config ``name`` does not set.

    open_clip (>= 2.23) no longer switches ``ViT-B-16`` to QuickGELU for its ``'openai'``
    weights: it only warns, and the model runs with the wrong activation. The tag's pretrained
    config says which one the weights were trained with; mmseg-format weights are OpenAI CLIP.
    A local open_clip/OpenAI file says nothing: the ``-quickgelu`` model names cover those.
    """
    import open_clip
    if mmseg_text:
        return True
    if not pretrained or os.path.isfile(pretrained):
        return False
    return bool(open_clip.get_pretrained_cfg(name, pretrained).get('quick_gelu', False))


def _check_pretrained_path(pretrained: str) -> None:
    if not os.path.isfile(pretrained):
        raise FileNotFoundError(f'CLIP weights file not found: {pretrained!r}')


def build_clip(clip_model: ClipSpec,
               pretrained: Optional[str] = None,
               device: Union[str, torch.device] = 'cpu') -> nn.Module:
    """Build an open_clip model, frozen and in eval mode.

    Args:
        clip_model: An open_clip model name (``'ViT-B-16'``) or an open_clip model config dict
            (``{'embed_dim': ..., 'vision_cfg': {...}, 'text_cfg': {...}}``, optionally with
            ``'custom_text': True`` and ``'quick_gelu': True``), or
            ``'transformers:<hub id or folder>'``: a Hugging Face ``CLIPModel`` mapped onto an
            open_clip ``CLIP`` (:mod:`pomp_mm.towers.hf_clip`; its weights come with it).
        pretrained: An open_clip pretrained tag (``'openai'``) for a named model, or the path of a
            local open_clip/OpenAI state dict, or of an mmseg-format CLIP checkpoint (SAN's
            ``pretrained``; only its text tower is read). None keeps the random initialisation.
        device: Where to put the model.
    """
    import open_clip

    if is_hf_spec(clip_model):
        if pretrained:
            raise ValueError(f'{clip_model!r} brings its own weights; pretrained={pretrained!r} '
                             'applies to open_clip models only')
        model = build_hf_clip(clip_model)
    elif isinstance(clip_model, dict):
        cfg = copy.deepcopy(dict(clip_model))
        custom_text = cfg.pop('custom_text', False)
        text = {}
        if pretrained:
            _check_pretrained_path(pretrained)
            text = _read_mmseg_text(pretrained)
            if text and not cfg.get('quick_gelu', False):
                # mmseg's CLIPTextEncoder only exists with QuickGELU (OpenAI CLIP's activation)
                logger.warning('mmseg-format CLIP weights %s: using quick_gelu=True (the model '
                               'config had quick_gelu=%s)', pretrained, cfg.get('quick_gelu'))
                cfg['quick_gelu'] = True
        cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
        model = cls(**cfg)
        if text:
            _load_mmseg_text(model, text, pretrained)
        elif pretrained:
            open_clip.load_checkpoint(model, pretrained)
    elif isinstance(clip_model, str):
        ensure_model_config(clip_model)
        if clip_model not in open_clip.list_models():
            raise ValueError(f'unknown open_clip model {clip_model!r}; see open_clip.list_models() '
                             'or pass an open_clip config dict')
        if pretrained and (os.path.sep in pretrained or pretrained.endswith(
                ('.pt', '.pth', '.bin', '.safetensors'))):
            _check_pretrained_path(pretrained)
        elif pretrained:
            tags = open_clip.list_pretrained_tags_by_model(clip_model)
            if pretrained not in tags:
                raise ValueError(f'{pretrained!r} is neither a file nor an open_clip tag of '
                                 f'{clip_model!r} (tags: {", ".join(tags) or "none"})')
        text = _read_mmseg_text(pretrained) if pretrained and os.path.isfile(pretrained) else {}
        model = open_clip.create_model(clip_model, pretrained=None if text else pretrained,
                                       force_quick_gelu=_needs_quick_gelu(clip_model, pretrained,
                                                                          bool(text)))
        if text:
            _load_mmseg_text(model, text, pretrained)
    else:
        raise TypeError(f'clip_model must be an open_clip model name or a config dict, '
                        f'got {type(clip_model).__name__}')
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def image_features(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised float features ``[M, D]`` of ``[..., 3, H, W]`` images from an image tower,
    in the tower's dtype and on its device.

    A convolutional tower (ResNet, CNN) runs channels-last, which oneDNN and cuDNN convolve
    faster (1.3x here on the world CLIP's CNN): its weights are converted in place on the first
    call (their layout, not their values). A ViT's lone patch convolution is left alone.
    """
    flat = images.reshape(-1, *images.shape[-3:])
    weight = next(visual.parameters())
    if _channels_last(visual):
        flat = flat.contiguous(memory_format=torch.channels_last)
    return F.normalize(visual(flat.to(weight.device, weight.dtype)).float(), dim=-1)


def _channels_last(visual: nn.Module) -> bool:
    convs = [m for m in visual.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) < 2:
        return False
    if not convs[0].weight.is_contiguous(memory_format=torch.channels_last):
        visual.to(memory_format=torch.channels_last)  # a layout change: same values
    return True
