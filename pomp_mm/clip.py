"""Building a frozen open_clip model and exposing its text tower to prompt learning.

:class:`TextTower` holds references to the text half of an open_clip ``CLIP`` (or a
``CustomTextCLIP`` whose text tower is an open_clip ``TextTransformer``) and runs it on token
*embeddings* rather than token ids, which is what prompt learning needs.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import weakref
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .hf_clip import build_hf_clip, is_hf_spec
from .shared_prefix import length_groups, shared_prefix_transformer, supports_shared_prefix
from .varlen import PackedLayout, packed_transformer

__all__ = ['build_clip', 'clip_config', 'clip_model_id', 'image_features', 'mmseg_text_state_dict',
           'register_model_config', 'resolve_clip_spec', 'TextTower', 'weights_fingerprint']

logger = logging.getLogger(__name__)

ClipSpec = Union[str, Dict[str, Any]]

#: Where pomp_mm's own open_clip model configs live: ``tiny`` (64-wide, 2-layer towers, for
#: smoke runs, tests and CPU benchmarks with random weights), known to open_clip by name once a
#: pomp_mm function is asked for it.
_MODEL_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'model_configs')


def resolve_clip_spec(spec: str) -> ClipSpec:
    """Command-line model spec: a ``.json`` open_clip model config file (read into a dict), or an
    open_clip model name (``'ViT-B-16'``, pomp_mm's ``'tiny'``) or a Hugging Face CLIP
    (``'transformers:<hub id or folder>'``, :mod:`pomp_mm.hf_clip`), returned unchanged."""
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
            open_clip ``CLIP`` (:mod:`pomp_mm.hf_clip`; its weights come with it).
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


class TextTower(nn.Module):
    """The causal text transformer of an open_clip model, run on token embeddings.

    All parameters are frozen; they are shared with (not copied from) the CLIP model.

    Args:
        clip: An open_clip ``CLIP`` or ``CustomTextCLIP`` with an open_clip ``TextTransformer``.
    """

    def __init__(self, clip: nn.Module):
        super().__init__()
        text = getattr(clip, 'text', clip)
        missing = [a for a in ('token_embedding', 'positional_embedding', 'transformer', 'ln_final')
                   if not hasattr(text, a)]
        if missing:
            raise TypeError(f'{type(text).__name__} is not an open_clip causal text transformer '
                            f'(lacks {missing}); prompt learning needs one')
        self.pool_type: str = getattr(text, 'text_pool_type', getattr(text, 'pool_type', 'argmax'))
        #: False for a bidirectional tower (SigLIP, pomp_mm.siglip): every position sees every
        #: other, so prompts run whole (no truncation, shared prefix or packing)
        self.causal: bool = getattr(text, 'attn_mask', None) is not None
        if not self.causal and self.pool_type != 'last':
            raise TypeError(f'the text tower has no causal attention mask and pools at '
                            f'{self.pool_type!r}; POMP prompts need a causal (CLIP-style) text '
                            "transformer or a bidirectional one pooled at the last position "
                            "(SigLIP, pool_type='last')")
        if self.causal and self.pool_type == 'last':
            raise TypeError("a causal text tower pooled at the last position (pool_type='last') "
                            'is not supported')
        if getattr(text, 'use_pad_mask', False):
            raise TypeError('text towers that mask padding (use_pad_mask) are not supported')
        if getattr(text, 'cls_emb', None) is not None:
            raise TypeError('text towers with an appended CLS token (CoCa) are not supported')
        self.token_embedding: nn.Embedding = text.token_embedding
        self.positional_embedding: nn.Parameter = text.positional_embedding
        self.transformer: nn.Module = text.transformer
        self.ln_final: nn.Module = text.ln_final
        self.text_projection = text.text_projection
        self.register_buffer('attn_mask', text.attn_mask.clone() if self.causal else None,
                             persistent=False)
        self.eos_id: Optional[int] = getattr(text, 'text_eos_id', getattr(text, 'eos_id', None))
        if self.pool_type not in ('argmax', 'eos', 'last'):
            raise TypeError(f'text pool type {self.pool_type!r} is not supported; POMP pools at '
                            'the end-of-text token (argmax or eos) or, in a bidirectional '
                            "(SigLIP) tower, at the last position ('last')")
        self.logit_scale: nn.Parameter = clip.logit_scale
        self.context_length: int = self.positional_embedding.shape[0]
        self.width: int = self.token_embedding.weight.shape[1]
        for p in self.parameters():
            p.requires_grad_(False)
        self._shares_prefix: Optional[bool] = None
        self._compiled = None

    @property
    def output_dim(self) -> int:
        proj = self.text_projection
        if proj is None:
            return self.width
        return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.get_cast_dtype()

    def eot_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """Position of the end-of-text token in each row of ``tokens`` [B, L]."""
        if self.pool_type == 'eos':
            return (tokens == self.eos_id).int().argmax(dim=-1)
        if self.pool_type == 'last':  # SigLIP: the last position, whatever token is there
            return torch.full(tokens.shape[:1], tokens.shape[1] - 1, dtype=torch.long,
                              device=tokens.device)
        return tokens.argmax(dim=-1)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens).to(self.dtype)

    def forward(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Encode token embeddings.

        Args:
            x: Token embeddings [B, L, width] with ``L <= context_length``. Because attention is
                causal, the output at the EOT token only depends on positions up to it, so ``L``
                may stop right after the longest EOT in the batch with no change in the result.
            eot: EOT position per row [B], each ``< L``.

        Returns:
            Unnormalised text features [B, output_dim].
        """
        seq_len = x.shape[1]
        if not self.causal:  # bidirectional: every position counts, padding included
            if seq_len != self.context_length:
                raise ValueError(f'a bidirectional text tower runs whole prompts of '
                                 f'{self.context_length} tokens, got {seq_len}')
            x = x + self.positional_embedding.to(x.dtype)
            return self._pool(self.ln_final(self.transformer(x, attn_mask=None)), eot)
        x = x + self.positional_embedding[:seq_len].to(x.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:seq_len, :seq_len])
        return self._pool(self.ln_final(x), eot)

    @property
    def shares_prefix(self) -> bool:
        """Whether :meth:`forward_shared_prefix` can run on this tower's blocks."""
        if self._shares_prefix is None:
            self._shares_prefix = self.causal and supports_shared_prefix(self.transformer)
        return self._shares_prefix

    def forward_shared_prefix(self, prefix: torch.Tensor, suffixes: Sequence[torch.Tensor],
                              eots: Sequence[torch.Tensor]) -> torch.Tensor:
        """:meth:`forward` of ``cat([prefix] * B, suffix)`` for each group of suffixes, running
        the prefix once for all groups.

        Args:
            prefix: Token embeddings [P, width] that every sequence starts with.
            suffixes: Groups of the rest of each sequence, [B, S, width] each (S may differ
                between groups), ``P + S <= context_length``.
            eots: Per group, the EOT position per row in the whole sequence [B], each ``>= P``.

        Returns:
            Unnormalised text features [sum of B, output_dim], groups in order.
        """
        p = prefix.shape[0]
        pos = self.positional_embedding.to(prefix.dtype)
        hidden = shared_prefix_transformer(self.transformer, prefix + pos[:p],
                                           [s + pos[p:p + s.shape[1]] for s in suffixes])
        rows = [h[torch.arange(h.shape[0], device=h.device), e.to(h.device) - p]
                for h, e in zip(hidden, eots)]
        return self._project(self.ln_final(torch.cat(rows)))

    def forward_prefixed(self, prefix: torch.Tensor, suffix: torch.Tensor, eot: torch.Tensor,
                         pack: bool = True) -> torch.Tensor:
        """:meth:`forward` of ``cat([prefix] * C, suffix)``, running the prefix once.

        Args:
            prefix: Token embeddings [P, width] that every sequence starts with.
            suffix: The rest of each sequence [C, S, width], ``P + S <= context_length``.
            eot: EOT position of each sequence in the whole sequence [C], each ``>= P``.
            pack: Run each group of sequences with the same EOT only up to it, packed without
                padding (see :mod:`~pomp_mm.shared_prefix`); False runs all of ``suffix``.

        Returns:
            Unnormalised text features [C, output_dim], in input order.
        """
        if not pack:
            return self.forward_shared_prefix(prefix, [suffix], [eot])
        p = prefix.shape[0]
        eot = eot.cpu()
        order = None if bool((eot[1:] >= eot[:-1]).all()) else torch.argsort(eot, stable=True)
        if order is not None:
            eot, suffix = eot[order], suffix[order.to(suffix.device)]
        runs = length_groups(eot)
        feats = self.forward_shared_prefix(
            prefix, [suffix[a:b, :last + 1 - p] for a, b, last in runs],
            [eot[a:b] for a, b, _ in runs])
        return feats if order is None else feats[torch.argsort(order).to(feats.device)]

    def forward_packed(self, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """:meth:`forward` of many sequences packed into rows (see :mod:`pomp_mm.varlen`).

        Args:
            x: Token embeddings [layout.rows, width]: the shared prefix, then every sequence's
                own tokens back to back, then padding rows.
            layout: Where each sequence lives.

        Returns:
            Unnormalised text features [layout.num_seqs, output_dim], one per sequence.
        """
        run = self._compiled or packed_transformer
        x = x + self.positional_embedding.to(x.dtype)[layout.positions]
        return self._project(self.ln_final(run(self.transformer, x, layout)[layout.last]))

    def compile_packed(self, enabled: bool = True) -> None:
        """Run :meth:`forward_packed`'s blocks through ``torch.compile`` (one graph per size
        bucket of a step's layout)."""
        if enabled:
            import torch._dynamo.config as dynamo
            # a graph per size bucket (rows, slots, sequences): more than dynamo's default 8
            dynamo.recompile_limit = max(dynamo.recompile_limit, 64)
        self._compiled = torch.compile(packed_transformer, dynamic=False) if enabled else None

    def _pool(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Features at the EOT positions [B], projected to the joint space."""
        return self._project(x[torch.arange(x.shape[0], device=x.device), eot])

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def encode_tokens(self, tokens: torch.Tensor, normalize: bool = True,
                      truncate: bool = True) -> torch.Tensor:
        """Encode token ids [B, context_length], as open_clip's ``encode_text`` does."""
        eot = self.eot_index(tokens)
        if truncate:
            tokens = tokens[:, :int(eot.max()) + 1]
        x = self.forward(self.embed_tokens(tokens), eot)
        return F.normalize(x, dim=-1) if normalize else x

    def fingerprint(self) -> str:
        """Hash of the text weights (:func:`weights_fingerprint`; read once per change)."""
        return weights_fingerprint(self, self.transformer)
