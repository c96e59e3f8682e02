"""The CLIP family: open_clip's causal text transformer and BPE tokenizer.

Attention is causal, so a prompt's features at its end-of-text token depend only on the
positions up to it: prompts may stop there (truncation), the ``[SOS, ctx]`` positions every
prompt with its name at the end starts with may run once (:mod:`pomp_mm.shared_prefix`), and a
step's prompts may be packed into one tensor with one attention call per layer
(:mod:`pomp_mm.varlen`). Hugging Face CLIP towers are this family after their weights are mapped
(:mod:`pomp_mm.towers.hf_clip`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..shared_prefix import length_groups, shared_prefix_transformer, supports_shared_prefix
from ..varlen import PackedLayout, packed_transformer, varlen_available
from .base import TextTower, open_clip_tokenizer

__all__ = ['ClipTower', 'clip_tokenizer']


def clip_tokenizer(clip_model: Any, context_length: int) -> Any:
    """open_clip's BPE ``SimpleTokenizer`` for ``clip_model``.

    Raises:
        TypeError: if open_clip gives the model another tokenizer.
    """
    from open_clip.tokenizer import SimpleTokenizer
    tokenizer = open_clip_tokenizer(clip_model, context_length)
    if not isinstance(tokenizer, SimpleTokenizer):
        raise TypeError(f'{clip_model!r} uses a {type(tokenizer).__name__}; POMP prompts need '
                        "CLIP's BPE tokenizer (open_clip SimpleTokenizer)")
    return tokenizer


class ClipTower(TextTower):
    """A causal text tower pooled at its end-of-text token (OpenAI / open_clip CLIP).

    Args:
        clip: An open_clip ``CLIP`` or ``CustomTextCLIP`` with a causal text transformer.
        tokenizer: Its tokenizer (open_clip's ``SimpleTokenizer``, :func:`clip_tokenizer`).
    """

    family = 'clip'
    causal = True

    def __init__(self, clip: nn.Module, tokenizer: Any = None):
        super().__init__(clip, tokenizer)
        text = getattr(clip, 'text', clip)
        if getattr(text, 'attn_mask', None) is None:
            raise TypeError(f'{type(text).__name__} has no causal attention mask; the CLIP '
                            'family is causal (see pomp_mm.towers.build_text_tower)')
        if self.pool_type == 'last':
            raise TypeError("a causal text tower pooled at the last position "
                            "(pool_type='last') is not supported")
        if self.pool_type not in ('argmax', 'eos'):
            raise TypeError(f'text pool type {self.pool_type!r} is not supported; POMP pools at '
                            'the end-of-text token (argmax or eos) or, in a bidirectional '
                            "(SigLIP) tower, at the last position ('last')")
        self.eos_id: Optional[int] = getattr(text, 'text_eos_id', getattr(text, 'eos_id', None))
        self.register_buffer('attn_mask', text.attn_mask.clone(), persistent=False)
        self._shares_prefix: Optional[bool] = None
        self._compiled = None

    @property
    def shares_prefix(self) -> bool:
        if self._shares_prefix is None:
            self._shares_prefix = supports_shared_prefix(self.transformer)
        return self._shares_prefix

    def runs_flash(self) -> bool:
        """Whether a packed layout here runs flash's varlen kernel (CUDA, half precision,
        under autocast or not), so it needs that kernel's view of the layout."""
        device = self.device
        dtype = torch.get_autocast_dtype(device.type) \
            if torch.is_autocast_enabled(device.type) else self.dtype
        return varlen_available(device, dtype)

    def eot_index(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.pool_type == 'eos':
            return (tokens == self.eos_id).int().argmax(dim=-1)
        return tokens.argmax(dim=-1)

    # ---------------------------------------------------------------- encoding
    def encode(self, prompts: Any, grouped: bool = False) -> torch.Tensor:
        if prompts.layout is not None:
            return self.forward_packed(prompts.rows, prompts.layout)
        if prompts.prefix is not None:
            return self.forward_prefixed(prompts.prefix, prompts.suffix, prompts.eot,
                                         pack=grouped)
        return super().encode(prompts)

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
        x = x + self.positional_embedding[:seq_len].to(x.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:seq_len, :seq_len])
        return self._pool(self.ln_final(x), eot)

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
