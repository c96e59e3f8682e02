"""Learned context vectors placed around class names (CoOp / POMP style prompts).

A prompt for class ``name`` is the text ``"X X ... X {name}."`` (``n_ctx`` placeholder words), as
in CoOp and the official POMP code, so official checkpoints keep their meaning. After token
embedding, the placeholder embeddings are replaced by the learned context vectors ``ctx``; for
``class_token_position`` ``'middle'`` and ``'front'`` the name tokens are moved accordingly.

:meth:`PromptLearner.embed` lays a batch of prompts out for a text tower
(:class:`PromptEmbeddings`): whole, as a shared ``[SOS, ctx]`` prefix and per-class suffixes,
or packed into rows (:class:`~pomp_mm.varlen.PackedLayout`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .varlen import PackedLayout

__all__ = ['PromptLearner', 'PromptBatch', 'PromptEmbeddings', 'CLASS_TOKEN_POSITIONS']

CLASS_TOKEN_POSITIONS = ('end', 'middle', 'front')
PLACEHOLDER = 'X'


@dataclass
class PromptBatch:
    """Tokenized prompts for a list of class names.

    Attributes:
        tokens: Token ids [C, context_length] of ``"X ... X {name}."``.
        name_lens: Number of name tokens per class [C].
        eot: Position of the end-of-text token per class [C].
    """

    tokens: torch.Tensor
    name_lens: torch.Tensor
    eot: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def select(self, index: torch.Tensor, seq_len: Optional[int] = None) -> 'PromptBatch':
        tokens = self.tokens[index]
        if seq_len is not None:
            tokens = tokens[:, :seq_len]
        return PromptBatch(tokens, self.name_lens[index], self.eot[index])


@dataclass
class PromptEmbeddings:
    """Embedded prompts in one of three layouts, what a text tower's ``encode`` takes.

    Attributes:
        eot: End-token position of each prompt in its whole sequence [C] (host).
        whole: Whole prompts [C, L, width] (``L`` up to the longest ``eot`` when truncated).
        prefix: The rows every prompt starts with [P, width] (shared-prefix layout).
        suffix: Each prompt's rows after ``prefix`` [C, L - P, width].
        rows: Packed rows [layout.rows, width]: the prefix (if any), every prompt's own tokens,
            padding.
        layout: Where each prompt lives in ``rows``.
    """

    eot: torch.Tensor
    whole: Optional[torch.Tensor] = None
    prefix: Optional[torch.Tensor] = None
    suffix: Optional[torch.Tensor] = None
    rows: Optional[torch.Tensor] = None
    layout: Optional[PackedLayout] = None


class PromptLearner(nn.Module):
    """Context vectors for prompt learning, usable with any vocabulary at call time.

    Args:
        n_ctx: Number of context vectors.
        width: Token embedding width of the text tower.
        ctx_init: Initial context [n_ctx, width] (e.g. the token embeddings of
            ``"a photo of a"``), or None for N(0, 0.02) initialisation.
        class_token_position: ``'end'``, ``'middle'`` or ``'front'``.
        csc_names: Class names for class-specific context (one ``ctx`` per class,
            [C, n_ctx, width]); None for one context shared by all classes.
        start_token: Prompts start with the tokenizer's start token (CLIP's ``[SOS]``). False
            for tokenizers without one (SigLIP, :mod:`pomp_mm.towers.siglip`): the context starts at
            position 0 and every prompt is padded to the context length (the tower pools at
            its last position).
    """

    def __init__(self,
                 n_ctx: int,
                 width: int,
                 ctx_init: Optional[torch.Tensor] = None,
                 class_token_position: str = 'end',
                 csc_names: Optional[Sequence[str]] = None,
                 start_token: bool = True):
        super().__init__()
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(f'class_token_position must be one of {CLASS_TOKEN_POSITIONS}, '
                             f'got {class_token_position!r}')
        if n_ctx < 1:
            raise ValueError(f'n_ctx must be >= 1, got {n_ctx}')
        shape: Tuple[int, ...] = (n_ctx, width)
        if csc_names is not None:
            shape = (len(csc_names), n_ctx, width)
        if ctx_init is not None:
            if tuple(ctx_init.shape) != (n_ctx, width):
                raise ValueError(f'ctx_init has shape {tuple(ctx_init.shape)}, expected '
                                 f'{(n_ctx, width)}')
            ctx = ctx_init.detach().float().clone().expand(shape).clone()
        else:
            ctx = torch.empty(shape).normal_(std=0.02)
        self.ctx = nn.Parameter(ctx)
        self.n_ctx = n_ctx
        self.width = width
        self.class_token_position = class_token_position
        self.start_token = start_token
        self.csc_names: Optional[List[str]] = list(csc_names) if csc_names is not None else None
        self._csc_index: Dict[str, int] = {}
        self._csc_repeated: Dict[str, List[int]] = {}  # names shared by several classes
        for i, name in enumerate(self.csc_names or ()):
            if name in self._csc_index:
                self._csc_repeated.setdefault(name, [self._csc_index[name]]).append(i)
            else:
                self._csc_index[name] = i
        self._token_cache: Dict[Tuple[int, str], Tuple[List[int], int]] = {}

    @property
    def class_specific(self) -> bool:
        return self.ctx.dim() == 3

    def prompt_text(self, name: str) -> str:
        return ' '.join([PLACEHOLDER] * self.n_ctx) + f' {name}.'

    def tokenize(self, names: Sequence[str], tokenizer, context_length: int) -> PromptBatch:
        """Tokenize the prompts of ``names`` (token ids are cached per name).

        Raises:
            ValueError: if a prompt does not fit in ``context_length`` tokens.
        """
        if not self.start_token:
            return self._tokenize_unstarted(names, tokenizer, context_length)
        sot, eot_id = tokenizer.sot_token_id, tokenizer.eot_token_id
        rows, name_lens = self._prompt_ids(
            names, tokenizer, context_length,
            lambda name: [sot] + tokenizer.encode(self.prompt_text(name)) + [eot_id])
        eot = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
        return PromptBatch(_padded(rows, context_length, 0), name_lens, eot)

    def _prompt_ids(self, names: Sequence[str], tokenizer, context_length: int,
                    make_ids) -> Tuple[List[List[int]], torch.Tensor]:
        """Each name's prompt ids (``make_ids(name)``, cached per name) and name token count."""
        rows, name_lens = [], []
        for name in names:
            key = (context_length, name)
            hit = self._token_cache.get(key)
            if hit is None:
                ids = make_ids(name)
                if len(ids) > context_length:
                    raise ValueError(
                        f'the prompt of class {name!r} has {len(ids)} tokens (with {self.n_ctx} '
                        f'context tokens), more than the context length {context_length}; '
                        'shorten the class name')
                hit = (ids, len(tokenizer.encode(name)))
                self._token_cache[key] = hit
            rows.append(hit[0])
            name_lens.append(hit[1])
        return rows, torch.tensor(name_lens, dtype=torch.long)

    def _tokenize_unstarted(self, names: Sequence[str], tokenizer,
                            context_length: int) -> PromptBatch:
        """:meth:`tokenize` for a tokenizer without a start token (SigLIP's): each row is
        ``n_ctx`` placeholder slots, then the ids of ``"{name}."`` as the tokenizer cleans and
        splits it, then its end token (if it appends one), padded with its pad id to
        ``context_length``; ``eot`` is the last position, where the tower pools."""
        if tokenizer.sot_token_id is not None:
            raise ValueError('this prompt has no start token (start_token=False) but the '
                             f'tokenizer starts texts with {tokenizer.sot_token_id}')
        end = [] if tokenizer.eot_token_id is None else [tokenizer.eot_token_id]
        pad = tokenizer.pad_token_id
        rows, name_lens = self._prompt_ids(
            names, tokenizer, context_length,
            lambda name: [pad] * self.n_ctx + tokenizer.encode(f'{name}.') + end)
        eot = torch.full((len(rows),), context_length - 1, dtype=torch.long)
        return PromptBatch(_padded(rows, context_length, pad), name_lens, eot)

    def class_indices(self, names: Sequence[str]) -> Optional[torch.Tensor]:
        """Row of ``ctx`` per name for class-specific context; None when shared."""
        if not self.class_specific:
            return None
        if list(names) == self.csc_names:  # the whole vocabulary: rows by position
            return torch.arange(len(names))
        unknown = [n for n in names if n not in self._csc_index]
        if unknown:
            raise KeyError(f'class-specific prompt has no context for {unknown[:5]} '
                           f'({len(unknown)} unknown of {len(names)}); it was learned for '
                           f'{len(self._csc_index)} classes')
        shared = next((n for n in names if n in self._csc_repeated), None)
        if shared is not None:
            raise ValueError(f'class-specific prompt: {shared!r} names classes '
                             f'{self._csc_repeated[shared]}, each with its own context; encode '
                             'the whole vocabulary in order to tell them apart')
        return torch.tensor([self._csc_index[n] for n in names], dtype=torch.long)

    def gather_index(self, name_lens: torch.Tensor, seq_len: int) -> torch.Tensor:
        """Source position of each output position [C, seq_len].

        Sources are ``cat([ctx, token_embeddings], 1)``: index ``i < n_ctx`` is ``ctx[i]``, index
        ``n_ctx + j`` is token ``j`` of ``"X ... X {name}."``. The name spans
        ``len(tokenizer.encode(name))`` tokens, as in CoOp; when the name ends in punctuation,
        CLIP's BPE merges it with the final ``'.'``, and that merged token moves with the name.
        """
        n_ctx = self.n_ctx
        s = int(self.start_token)  # positions before the context (SOS)
        p = torch.arange(seq_len, device=name_lens.device).expand(len(name_lens), -1)
        n = name_lens[:, None]
        token = n_ctx + p  # same position of the tokenized text
        if self.class_token_position == 'end':
            idx = torch.where(p < n_ctx + s, p - s, token)
        elif self.class_token_position == 'front':
            idx = torch.where(p < n + s, 2 * n_ctx + p,
                              torch.where(p < n + n_ctx + s, p - n - s, token))
        else:
            half = n_ctx // 2
            idx = torch.where(
                p < half + s, p - s,
                torch.where(p < half + n + s, 2 * n_ctx + p - half,
                            torch.where(p < n + n_ctx + s, p - n - s, token)))
        if not s:
            return idx
        return torch.where(p == 0, torch.full_like(idx, n_ctx), idx)

    @property
    def has_shared_prefix(self) -> bool:
        """Every prompt starts with the same ``[SOS, ctx]`` (shared context, name at the end)."""
        return not self.class_specific and self.class_token_position == 'end' and \
            self.start_token

    def split_shared_prefix(
            self, token_embeds: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """``(prefix [n_ctx + 1, width], suffixes [C, L - n_ctx - 1, width])`` when every prompt
        starts with the same ``[SOS, ctx]`` (shared context, class name at the end), else None.

        ``cat([prefix] * C, suffixes)`` equals :meth:`forward`'s output for the same tokens.
        """
        if not self.has_shared_prefix:
            return None
        ctx = self.ctx.to(token_embeds.dtype)
        prefix = torch.cat([token_embeds[0, :1], ctx])  # SOS is the same token in every row
        return prefix, token_embeds[:, self.n_ctx + 1:]

    def embed(self, batch: PromptBatch, embed_tokens: Callable[[torch.Tensor], torch.Tensor],
              class_index: Optional[torch.Tensor] = None, *, truncate: bool = True,
              share_prefix: bool = False, packed: bool = False,
              flash: bool = False) -> PromptEmbeddings:
        """Lay ``batch``'s prompts out for a text tower.

        Args:
            batch: Tokenized prompts (``eot`` on the host; tokens anywhere).
            embed_tokens: The tower's token embedding (ids -> [..., width]).
            class_index: Rows of a class-specific ``ctx``.
            truncate: Stop every prompt at the batch's last end token (causal towers only).
            share_prefix: Give the ``[SOS, ctx]`` rows every prompt starts with once, where
                they do (:attr:`has_shared_prefix`).
            packed: Pack the prompts into rows (truncated); with ``share_prefix``, the prefix
                rows first.
            flash: Build the packed layout's view for flash's varlen kernel.
        """
        shared = share_prefix and self.has_shared_prefix
        tokens = batch.tokens
        if truncate or packed:
            tokens = tokens[:, :int(batch.eot.max()) + 1]
        tokens = tokens.to(self.ctx.device, non_blocking=True)
        if packed:
            return self._packed(batch, tokens, embed_tokens, class_index, shared, flash)
        embeds = embed_tokens(tokens)
        if shared:
            prefix, suffix = self.split_shared_prefix(embeds)
            return PromptEmbeddings(batch.eot, prefix=prefix, suffix=suffix)
        return PromptEmbeddings(batch.eot, whole=self(embeds, batch, class_index))

    def _packed(self, batch: PromptBatch, tokens: torch.Tensor, embed_tokens: Callable,
                class_index: Optional[torch.Tensor], shared: bool,
                flash: bool) -> PromptEmbeddings:
        """Prompts packed into rows: only the token ids a row needs are embedded."""
        prefix_len = self.n_ctx + 1 if shared else 0
        width = tokens.shape[1]
        layout = PackedLayout.build(batch.eot + 1 - prefix_len, prefix_len, tokens.device,
                                    varlen=flash, source_width=width)
        if shared:
            own = embed_tokens(tokens.reshape(-1)[layout.source_rows])
            rows = torch.cat([embed_tokens(tokens[0, :1]), self.ctx.to(own.dtype), own])
        else:
            whole = self(embed_tokens(tokens), batch, class_index)
            rows = whole.reshape(-1, whole.shape[-1])[layout.source_rows]
        return PromptEmbeddings(batch.eot, rows=rows, layout=layout)

    def forward(self, token_embeds: torch.Tensor, batch: PromptBatch,
                class_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Assemble prompt embeddings [C, L, width] from token embeddings [C, L, width]."""
        num, seq_len, width = token_embeds.shape
        ctx = self.ctx.to(token_embeds.dtype)
        if self.class_specific:
            if class_index is None:
                raise ValueError('class-specific context needs class_index')
            ctx = ctx[class_index.to(ctx.device)]
        else:
            ctx = ctx.unsqueeze(0).expand(num, -1, -1)
        src = torch.cat([ctx, token_embeds], dim=1)
        idx = self.gather_index(batch.name_lens.to(src.device), seq_len)
        return torch.gather(src, 1, idx.unsqueeze(-1).expand(-1, -1, width))


def _padded(rows: Sequence[Sequence[int]], length: int, fill: int) -> torch.Tensor:
    """Token id rows as one [len(rows), length] tensor, padded with ``fill``."""
    tokens = torch.full((len(rows), length), fill, dtype=torch.long)
    for i, ids in enumerate(rows):
        tokens[i, :len(ids)] = torch.tensor(ids)
    return tokens
