"""The interface every text-tower family implements.

A tower holds the text half of a CLIP-family model in four pieces, as transformers keeps its
CLIP-family models: token embeddings, an encoder (the transformer blocks), pooling and a
projection, plus the family's tokenizer. :meth:`TextTower.encode` takes prompts already laid
out by the prompt learner (:class:`~pomp_mm.prompt_learner.PromptEmbeddings`) and returns their
features; the family decides which attention kernel runs them.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['TextTower', 'open_clip_tokenizer']


def open_clip_tokenizer(clip_model: Any, context_length: int) -> Any:
    """The tokenizer open_clip gives the model ``clip_model`` (a registered name or a config
    dict), for the family to check and wrap."""
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer
    if isinstance(clip_model, str):
        from ..model_config import ensure_model_config
        ensure_model_config(clip_model)
        return open_clip.get_tokenizer(clip_model)
    text_cfg = (clip_model or {}).get('text_cfg') or {}
    if text_cfg.get('hf_tokenizer_name'):  # as open_clip.get_tokenizer reads a config
        return open_clip.tokenizer.HFTokenizer(
            text_cfg['hf_tokenizer_name'], context_length=context_length,
            tokenizer_mode=text_cfg.get('tokenizer_mode'),
            **(text_cfg.get('tokenizer_kwargs') or {}))
    return SimpleTokenizer(context_length=context_length)


class TextTower(nn.Module):
    """A frozen CLIP-family text tower, run on token *embeddings* (what prompts need).

    Its parameters are shared with (not copied from) the CLIP model, and frozen.

    Args:
        clip: An open_clip ``CLIP`` or ``CustomTextCLIP`` (or its text transformer).
        tokenizer: The family's tokenizer (``encode`` / ``__call__`` / special token ids as
            open_clip's ``SimpleTokenizer``); None where only token ids come in.

    Attributes:
        family: The family's name (``'clip'``, ``'hf-clip'``, ``'siglip'``).
        causal: Causal attention: a prompt may stop at its end token and share a prefix.
    """

    family: str = ''
    causal: bool = True

    def __init__(self, clip: nn.Module, tokenizer: Any = None):
        super().__init__()
        text = getattr(clip, 'text', clip)
        missing = [a for a in ('token_embedding', 'positional_embedding', 'transformer',
                               'ln_final') if not hasattr(text, a)]
        if missing:
            raise TypeError(f'{type(text).__name__} is not an open_clip text transformer '
                            f'(lacks {missing}); prompt learning needs one')
        if getattr(text, 'use_pad_mask', False):
            raise TypeError('text towers that mask padding (use_pad_mask) are not supported')
        if getattr(text, 'cls_emb', None) is not None:
            raise TypeError('text towers with an appended CLS token (CoCa) are not supported')
        self.pool_type: str = getattr(text, 'text_pool_type', getattr(text, 'pool_type',
                                                                      'argmax'))
        self.token_embedding: nn.Embedding = text.token_embedding
        self.positional_embedding: nn.Parameter = text.positional_embedding
        self.transformer: nn.Module = text.transformer
        self.ln_final: nn.Module = text.ln_final
        self.text_projection = text.text_projection
        self.logit_scale: nn.Parameter = clip.logit_scale
        self.context_length: int = self.positional_embedding.shape[0]
        self.width: int = self.token_embedding.weight.shape[1]
        self.tokenizer = tokenizer
        for p in self.parameters():
            p.requires_grad_(False)

    # ---------------------------------------------------------------- pieces
    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.get_cast_dtype()

    @property
    def output_dim(self) -> int:
        proj = self.text_projection
        if proj is None:
            return self.width
        return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]

    @property
    def shares_prefix(self) -> bool:
        """Whether the packed and shared-prefix kernels can run this tower's blocks."""
        return False

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings of ids, in the tower's compute dtype."""
        return self.token_embedding(tokens).to(self.dtype)

    def eot_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """Position the tower pools at in each row of ``tokens`` [B, L]."""
        raise NotImplementedError

    def _pool(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Features at the pooled positions [B], projected to the joint space."""
        return self._project(x[torch.arange(x.shape[0], device=x.device), eot])

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    # ---------------------------------------------------------------- the interface
    def forward(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Unnormalised features [B, output_dim] of whole prompts' embeddings [B, L, width],
        pooled at ``eot`` [B]."""
        raise NotImplementedError

    def encode(self, prompts: Any, grouped: bool = False) -> torch.Tensor:
        """Unnormalised features [C, output_dim] of prompts laid out by the prompt learner.

        Args:
            prompts: A :class:`~pomp_mm.prompt_learner.PromptEmbeddings`.
            grouped: Run a shared-prefix layout one attention call per prompt length (packed
                without padding) rather than padded to its longest.
        """
        if prompts.whole is None:
            raise ValueError(f'a {self.family} tower runs whole prompts only')
        return self.forward(prompts.whole, prompts.eot.to(self.device, non_blocking=True))

    def encode_tokens(self, tokens: torch.Tensor, normalize: bool = True,
                      truncate: bool = True) -> torch.Tensor:
        """Encode token ids [B, context_length], as open_clip's ``encode_text`` does
        (``truncate``: stop at the last pooled position where attention is causal)."""
        eot = self.eot_index(tokens)
        if truncate and self.causal:
            tokens = tokens[:, :int(eot.max()) + 1]
        x = self.forward(self.embed_tokens(tokens), eot)
        return F.normalize(x, dim=-1) if normalize else x

    def fingerprint(self) -> str:
        """Hash of the text weights (:func:`~pomp_mm.clip.weights_fingerprint`)."""
        from ..fingerprint import weights_fingerprint
        return weights_fingerprint(self, self.transformer)

    def extra_repr(self) -> str:
        return (f'family={self.family!r}, width={self.width}, '
                f'context_length={self.context_length}')

