"""Hugging Face ``transformers`` CLIP models as open_clip models, for prompt learning.

``clip_model='transformers:<hub id or folder>'`` names a ``CLIPModel`` saved with
``save_pretrained`` (or, with the hub online, its id, e.g.
``'transformers:openai/clip-vit-base-patch32'``, the text tower YOLO-World reads).

HF's ``CLIPTextTransformer`` takes token ids only, but a learned prompt enters as token
*embeddings*. Its architecture is OpenAI CLIP's (token + position embeddings, pre-LN causal
layers, final layer norm, pooling at the end-of-text token, a bias-free projection), so the
weights are mapped by name onto an open_clip ``CLIP`` of the same dimensions: q/k/v
projections are concatenated into ``in_proj``, ``hidden_act`` picks QuickGELU or GELU, and
``layer_norm_eps`` is kept. Every pomp_mm text path (padded, grouped, varlen, shared prefix)
and the image tower (for pre-training) then run unchanged. The names read are those of the
checkpoint files (``text_model.encoder.layers.0.self_attn.q_proj.weight``, ...), which
transformers has kept stable across versions.

Pooling follows ``CLIPTextTransformer``: configs with ``eos_token_id == 2`` (those saved before
transformers 4.31, the OpenAI ones among them) pool at the largest token id, others at the
first ``eos_token_id``. Text is tokenized by the folder's own tokenizer (:class:`HFTokenizer`),
as ``CLIPModel`` users do: it differs from open_clip's in its text cleaning (no HTML
unescaping, NFC rather than ftfy's normalisation).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from .clip import ClipTower

__all__ = ['HF_PREFIX', 'HFTokenizer', 'HfClipTower', 'build_hf_clip', 'hf_source',
           'hf_tokenizer', 'is_hf_spec', 'open_clip_config', 'open_clip_state_dict']

#: The ``clip_model`` prefix of Hugging Face CLIP models.
HF_PREFIX = 'transformers:'

_ACTIVATIONS = ('quick_gelu', 'gelu')


def is_hf_spec(clip_model: Any) -> bool:
    """Whether ``clip_model`` names a Hugging Face CLIP model (``'transformers:...'``)."""
    return isinstance(clip_model, str) and clip_model.startswith(HF_PREFIX)


def hf_source(clip_model: str) -> str:
    """The hub id or folder of a ``'transformers:<id or folder>'`` spec.

    Raises:
        ValueError: if nothing follows the prefix.
        FileNotFoundError: if it names a local path (``./x``, ``/x``, ``~/x``) that is not a
            folder.
    """
    source = clip_model[len(HF_PREFIX):].strip()
    if not source:
        raise ValueError(f"{clip_model!r} names no model: use 'transformers:<hub id or folder>', "
                         "e.g. 'transformers:openai/clip-vit-base-patch32'")
    source = os.path.expanduser(source)
    looks_local = source.startswith(('.', os.sep)) or os.path.exists(source)
    if looks_local and not os.path.isdir(source):
        raise FileNotFoundError(f'Hugging Face CLIP folder not found: {source!r} (from '
                                f'{clip_model!r}; a folder written by save_pretrained)')
    return source


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise ImportError("clip_model='transformers:...' needs Hugging Face transformers: "
                          "pip install 'pomp_mm[hf]'") from err
    return transformers


def _clip_config(source: str):
    config = _transformers().AutoConfig.from_pretrained(source)
    if getattr(config, 'model_type', None) != 'clip':
        raise ValueError(
            f'{source!r} holds a {getattr(config, "model_type", "?")!r} model, not a whole CLIP '
            "(model_type 'clip'): save the CLIPModel (both towers and the projections), "
            'e.g. CLIPModel.from_pretrained(...).save_pretrained(folder)')
    return config


def _mlp_ratio(hidden: int, intermediate: int) -> float:
    """A ratio open_clip turns back into ``intermediate`` (it computes ``int(width * ratio)``)."""
    ratio = intermediate / hidden
    return ratio if int(hidden * ratio) == intermediate else (intermediate + 0.5) / hidden


def open_clip_config(config: Any) -> Dict[str, Any]:
    """open_clip ``CLIP`` keyword arguments for a transformers ``CLIPConfig``.

    Raises:
        ValueError: for what an open_clip ``CLIP`` cannot hold (another activation, mixed
            activations or layer-norm epsilons, non-RGB input, heads that do not divide the
            width).
    """
    text, vision = config.text_config, config.vision_config
    acts = {text.hidden_act, vision.hidden_act}
    if len(acts) > 1 or not acts <= set(_ACTIVATIONS):
        raise ValueError(f'hidden_act text={text.hidden_act!r}, vision={vision.hidden_act!r}: '
                         f'pomp_mm maps CLIP models whose towers both use one of {_ACTIVATIONS}')
    if text.layer_norm_eps != vision.layer_norm_eps:
        raise ValueError(f'layer_norm_eps text={text.layer_norm_eps}, vision='
                         f'{vision.layer_norm_eps}: pomp_mm maps CLIP models with one epsilon')
    if getattr(vision, 'num_channels', 3) != 3:
        raise ValueError(f'vision num_channels={vision.num_channels}: open_clip towers take RGB')
    for name, cfg in (('text', text), ('vision', vision)):
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f'{name} hidden_size {cfg.hidden_size} is not a multiple of '
                             f'num_attention_heads {cfg.num_attention_heads}')
    norm = {'eps': float(text.layer_norm_eps)}
    legacy_eos = text.eos_token_id == 2  # CLIPTextTransformer's own test: pool at argmax
    return dict(
        embed_dim=config.projection_dim,
        quick_gelu=text.hidden_act == 'quick_gelu',
        vision_cfg=dict(
            image_size=vision.image_size, patch_size=vision.patch_size,
            width=vision.hidden_size, layers=vision.num_hidden_layers,
            head_width=vision.hidden_size // vision.num_attention_heads,
            mlp_ratio=_mlp_ratio(vision.hidden_size, vision.intermediate_size),
            norm_kwargs=norm),
        text_cfg=dict(
            context_length=text.max_position_embeddings, vocab_size=text.vocab_size,
            width=text.hidden_size, heads=text.num_attention_heads,
            layers=text.num_hidden_layers,
            mlp_ratio=_mlp_ratio(text.hidden_size, text.intermediate_size),
            pool_type='argmax' if legacy_eos else 'eos',
            eos_id=2 if legacy_eos else int(text.eos_token_id), norm_kwargs=norm))


def _take(state: Dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise KeyError(f'Hugging Face CLIP weights lack {key!r}; is this a CLIPModel checkpoint?')
    return state[key].detach().to(torch.float32)


def _blocks(state: Dict[str, torch.Tensor], src: str, dst: str, layers: int,
            out: Dict[str, torch.Tensor]) -> None:
    """``CLIPEncoderLayer`` weights -> open_clip ``ResidualAttentionBlock`` weights."""
    for i in range(layers):
        s, d = f'{src}.encoder.layers.{i}.', f'{dst}.resblocks.{i}.'
        for part in ('weight', 'bias'):
            out[d + f'attn.in_proj_{part}'] = torch.cat(
                [_take(state, f'{s}self_attn.{p}_proj.{part}') for p in 'qkv'])
            for theirs, ours in (('self_attn.out_proj', 'attn.out_proj'), ('layer_norm1', 'ln_1'),
                                 ('layer_norm2', 'ln_2'), ('mlp.fc1', 'mlp.c_fc'),
                                 ('mlp.fc2', 'mlp.c_proj')):
                out[f'{d}{ours}.{part}'] = _take(state, f'{s}{theirs}.{part}')


def _norm(state: Dict[str, torch.Tensor], src: str, dst: str,
          out: Dict[str, torch.Tensor]) -> None:
    out[dst + '.weight'] = _take(state, src + '.weight')
    out[dst + '.bias'] = _take(state, src + '.bias')


def open_clip_state_dict(state: Dict[str, torch.Tensor], config: Any) -> Dict[str, torch.Tensor]:
    """A transformers ``CLIPModel`` state dict as an open_clip ``CLIP`` state dict (float32).

    Args:
        state: ``CLIPModel.state_dict()`` (or the checkpoint's tensors, same names).
        config: Its ``CLIPConfig`` (layer counts).
    """
    out: Dict[str, torch.Tensor] = {}
    t, v = 'text_model', 'vision_model'
    out['token_embedding.weight'] = _take(state, f'{t}.embeddings.token_embedding.weight')
    out['positional_embedding'] = _take(state, f'{t}.embeddings.position_embedding.weight')
    _blocks(state, t, 'transformer', config.text_config.num_hidden_layers, out)
    _norm(state, f'{t}.final_layer_norm', 'ln_final', out)
    out['text_projection'] = _take(state, 'text_projection.weight').t().contiguous()
    out['visual.conv1.weight'] = _take(state, f'{v}.embeddings.patch_embedding.weight')
    out['visual.class_embedding'] = _take(state, f'{v}.embeddings.class_embedding')
    out['visual.positional_embedding'] = _take(state, f'{v}.embeddings.position_embedding.weight')
    _norm(state, f'{v}.pre_layrnorm', 'visual.ln_pre', out)
    _blocks(state, v, 'visual.transformer', config.vision_config.num_hidden_layers, out)
    _norm(state, f'{v}.post_layernorm', 'visual.ln_post', out)
    out['visual.proj'] = _take(state, 'visual_projection.weight').t().contiguous()
    out['logit_scale'] = _take(state, 'logit_scale').reshape(())
    return out


def _preprocess_cfg(source: str, image_size: int) -> Optional[Dict[str, Any]]:
    """open_clip ``preprocess_cfg`` from the folder's ``preprocessor_config.json`` (mean and
    std); None (OpenAI CLIP's) without one."""
    path = os.path.join(source, 'preprocessor_config.json')
    if not os.path.isdir(source):
        try:
            from transformers.utils import cached_file
            path = cached_file(source, 'preprocessor_config.json',
                               _raise_exceptions_for_missing_entries=False)
        except Exception:  # offline, gated, no such file: keep OpenAI's
            path = None
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        cfg = json.load(f)
    if 'image_mean' not in cfg or 'image_std' not in cfg:
        return None
    return {'size': image_size, 'mean': tuple(cfg['image_mean']), 'std': tuple(cfg['image_std']),
            'interpolation': 'bicubic', 'resize_mode': 'shortest'}


def build_hf_clip(clip_model: str) -> nn.Module:
    """The open_clip ``CLIP`` holding a transformers ``CLIPModel``'s weights.

    Args:
        clip_model: ``'transformers:<hub id or folder>'``.

    Returns:
        An open_clip ``CLIP`` (float32, train mode: :func:`~pomp_mm.clip.build_clip` freezes it).
    """
    import open_clip
    source = hf_source(clip_model)
    transformers = _transformers()
    config = _clip_config(source)
    cfg = open_clip_config(config)
    hf = transformers.CLIPModel.from_pretrained(source)
    state = open_clip_state_dict(hf.state_dict(), config)
    del hf
    model = open_clip.CLIP(**cfg)
    own = set(model.state_dict())
    if own != set(state):
        unset, unused = sorted(own - set(state))[:5], sorted(set(state) - own)[:5]
        raise ValueError(f'mapping {clip_model!r} onto open_clip left {unset} unset and '
                         f'{unused} unused')
    model.load_state_dict(state)
    preprocess = _preprocess_cfg(source, config.vision_config.image_size)
    if preprocess is not None:
        model.visual.preprocess_cfg = preprocess
    return model


class HFTokenizer:
    """The part of open_clip's ``SimpleTokenizer`` pomp_mm uses, over a transformers CLIP
    tokenizer (the one ``CLIPModel`` users tokenize with).

    Args:
        tokenizer: A transformers ``CLIPTokenizer`` (or ``CLIPTokenizerFast``).
        context_length: Length of the rows :meth:`__call__` returns.
    """

    def __init__(self, tokenizer: Any, context_length: int):
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.sot_token_id: int = tokenizer.bos_token_id
        self.eot_token_id: int = tokenizer.eos_token_id
        if self.sot_token_id is None or self.eot_token_id is None:
            raise ValueError(f'{type(tokenizer).__name__} has no bos/eos token (bos_token_id='
                             f'{self.sot_token_id}, eos_token_id={self.eot_token_id}); a CLIP '
                             'tokenizer has <|startoftext|> and <|endoftext|>')

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text``, without start/end tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)['input_ids'])

    def __call__(self, texts: Union[str, Sequence[str]],
                 context_length: Optional[int] = None) -> torch.Tensor:
        """Token ids [B, context_length]: start, text, end, then zeros; too long a text is cut
        and still ends with the end token (as both libraries do)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        ids = self.tokenizer(texts, add_special_tokens=False)['input_ids']
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for i, row in enumerate(ids):
            row = [self.sot_token_id] + list(row)[:length - 2] + [self.eot_token_id]
            out[i, :len(row)] = torch.tensor(row)
        return out


def hf_tokenizer(clip_model: str, context_length: int) -> HFTokenizer:
    """The tokenizer of ``'transformers:<hub id or folder>'``.

    Raises:
        ValueError: if the config pools at an ``eos_token_id`` that is not the tokenizer's.
    """
    source = hf_source(clip_model)
    tokenizer = HFTokenizer(_transformers().AutoTokenizer.from_pretrained(source),
                            context_length)
    eos = _clip_config(source).text_config.eos_token_id
    if eos != 2 and eos != tokenizer.eot_token_id:
        raise ValueError(f'{clip_model!r}: the text config pools at eos_token_id={eos} but the '
                         f'tokenizer ends texts with {tokenizer.eot_token_id}')
    return tokenizer


class HfClipTower(ClipTower):
    """A Hugging Face ``CLIPModel``'s text tower: the CLIP family, on the open_clip model
    :func:`build_hf_clip` maps its weights onto, with its folder's tokenizer
    (:func:`hf_tokenizer`)."""

    family = 'hf-clip'
