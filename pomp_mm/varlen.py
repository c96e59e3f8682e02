"""A step's prompts through a causal text transformer in one attention call per layer.

The sequences of a step (one per class) are packed into one ``[R, W]`` tensor: an optional
shared prefix first (the ``[SOS, ctx]`` every POMP prompt with its class name at the end starts
with, ``P`` rows, run once), then every sequence's own tokens back to back, then a few rows of
padding up to a size bucket so that the shapes a compiler or a CUDA graph sees stay few. All
position-wise work (layer norms, projections, MLP) runs on that tensor, so no position but the
bucket's tail is padding. Attention is one call per layer over a :class:`PackedLayout`:

* on CUDA in half precision, ``torch.nn.attention.varlen.varlen_attn`` (flash's varlen
  kernel): each sequence's queries against its keys ``[prefix; own tokens]``, causal aligned to
  the end of the keys, so an own token sees the whole prefix and its own earlier tokens;
* elsewhere (the CPU path the tests check for exactness, and float32 on CUDA),
  ``scaled_dot_product_attention`` over the own tokens laid out padded per sequence, with the
  prefix's keys and values in front and a boolean mask.

Every index a step needs is built on the host from the sequences' lengths (known there without
a device sync) and copied to the device in one transfer: a step's kernel count does not depend on
its number of classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['PackedLayout', 'ATTENTION_MODES', 'varlen_available', 'packed_transformer']

#: ``attention=`` values of :class:`~pomp_mm.PompTextEncoder` and ``PompPretrainer``.
ATTENTION_MODES = ('auto', 'varlen', 'grouped', 'padded')


def _ceil_to(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


def varlen_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether flash's varlen kernel serves ``dtype`` on ``device`` (CUDA, fp16 / bf16)."""
    if device.type != 'cuda' or dtype not in (torch.float16, torch.bfloat16):
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class PackedLayout:
    """Where each sequence of a packed step lives; built by :meth:`build`.

    Rows ``[0, prefix_len)`` of the packed tensor are the shared prefix, then sequence ``c``'s own
    tokens at ``prefix_len + start_c ... + length_c - 1``, then padding up to ``rows``.

    Attributes:
        prefix_len: ``P``, rows every sequence attends to in front of its own (0: none).
        num_seqs: Sequences (classes) of the step.
        tokens: Own tokens of all sequences, ``T``.
        rows: Packed rows, ``P + T`` rounded up to the token bucket.
        max_len: Query slots per sequence of the padded path, ``S`` (the longest own length,
            and ``P``, rounded up to the length bucket).
        padded_seqs: Sequences of the padded path, ``C``: the prefix's own (when ``P > 0``),
            then one per class, rounded up to the sequence bucket.
        lengths: Own length per sequence [num_seqs] (host).
        positions: Position id of each packed row [rows].
        last: Packed row of each sequence's last token [num_seqs].
        q_rows: Packed row of each query slot [C * S] (empty slots: row 0).
        k_rows: Packed row of each key slot [C * (P + S)]: the prefix rows, then the query
            slots' rows.
        out_slots: Query slot of each packed row [rows] (padding rows: slot 0).
        mask: Boolean attention mask [C, 1, S, P + S] of the padded path (True: attend);
            None in a layout built for the varlen kernel.
        source_rows: See ``source_width`` of :meth:`build` [rows - P] (padding rows: row P).
        cu_seq_q, cu_seq_k, key_rows, max_q, max_k: The varlen kernel's view (CUDA only):
            sequences are the prefix, every class and the padding tail; ``key_rows`` picks each
            sequence's keys ``[prefix; own]`` from the packed rows.
    """

    prefix_len: int
    num_seqs: int
    tokens: int
    rows: int
    max_len: int
    padded_seqs: int
    lengths: torch.Tensor
    positions: torch.Tensor
    last: torch.Tensor
    q_rows: torch.Tensor
    k_rows: torch.Tensor
    out_slots: torch.Tensor
    mask: Optional[torch.Tensor] = None
    source_rows: Optional[torch.Tensor] = None
    cu_seq_q: Optional[torch.Tensor] = None
    cu_seq_k: Optional[torch.Tensor] = None
    key_rows: Optional[torch.Tensor] = None
    max_q: int = 0
    max_k: int = 0

    @property
    def uses_varlen(self) -> bool:
        return self.cu_seq_q is not None

    @classmethod
    def build(cls, lengths: torch.Tensor, prefix_len: int, device: torch.device,
              varlen: bool = False, source_width: Optional[int] = None,
              token_bucket: int = 128, length_bucket: int = 8,
              seq_bucket: int = 32) -> 'PackedLayout':
        """Layout of sequences with own lengths ``lengths`` [C] (host tensor, each >= 1).

        Args:
            lengths: Own tokens per sequence, after the shared prefix.
            prefix_len: Shared prefix rows ``P`` (0 for none).
            device: Where the step runs.
            varlen: Also build the varlen kernel's view (CUDA half precision).
            source_width: With ``L``, also :attr:`source_rows`: where each own row sits in a
                ``[num_seqs * L]`` flattening of the whole sequences (prefix included).
            token_bucket, length_bucket, seq_bucket: Round packed rows, the longest length and
                the sequence count up to multiples of these.
        """
        lengths = lengths.to('cpu', torch.long)
        if lengths.dim() != 1 or lengths.numel() == 0:
            raise ValueError(f'lengths must be a non-empty 1-D tensor, got {tuple(lengths.shape)}')
        num = lengths.numel()
        total = int(lengths.sum())
        longest = int(lengths.max())
        if int(lengths.min()) < 1:
            raise ValueError(f'every sequence needs at least one own token, got lengths '
                             f'{lengths[lengths < 1][:5].tolist()}')
        p = int(prefix_len)
        rows = _ceil_to(p + total, token_bucket)
        ends = lengths.cumsum(0)
        starts = ends - lengths
        seq = torch.repeat_interleave(torch.arange(num), lengths)           # [T]
        offset = torch.arange(total) - starts[seq]                           # [T]
        positions = torch.full((rows,), p, dtype=torch.long)
        positions[:p] = torch.arange(p)
        positions[p:p + total] = p + offset
        last = p + ends - 1
        # The padded path's sequences: the prefix's own (its causal self-attention, when
        # there is one), then one per class, padded to C; each has S query slots and P + S key
        # slots (the prefix rows, then its own tokens).
        first = 1 if p else 0
        s = _ceil_to(max(longest, p), length_bucket)
        c = _ceil_to(num + first, seq_bucket)
        q_len = torch.zeros(c, dtype=torch.long)
        q_len[first:first + num] = lengths
        row_start = torch.zeros(c, dtype=torch.long)
        row_start[first:first + num] = p + starts
        i = torch.arange(s)
        slot_row = row_start[:, None] + i                                    # [C, S]
        slot_ok = i < q_len[:, None]
        if p:
            slot_row[0, :p], slot_ok[0, :p] = torch.arange(p), True
        q_rows = torch.where(slot_ok, slot_row, 0).reshape(-1)
        k_rows = torch.cat([torch.arange(p).expand(c, p), q_rows.view(c, s)], 1).reshape(-1)
        out_slots = torch.zeros(rows, dtype=torch.long)
        out_slots[:p] = torch.arange(p)
        out_slots[p:p + total] = (seq + first) * s + offset
        mask = None if varlen else _padded_mask(i, q_len, p)  # the flash kernel needs none
        ints = [positions, last, q_rows, k_rows, out_slots]
        if source_width is not None:
            source_rows = torch.full((rows - p,), p, dtype=torch.long)
            source_rows[:total] = seq * source_width + p + offset
            ints.append(source_rows)
        sizes = [t.numel() for t in ints]
        extra = {}
        if varlen:
            # sequences: the prefix (if any), each class, the padding tail (if any)
            tail = rows - p - total
            q_lens = torch.cat([torch.tensor([p] if p else [], dtype=torch.long), lengths,
                                torch.tensor([tail] if tail else [], dtype=torch.long)])
            k_lens = torch.cat([torch.tensor([p] if p else [], dtype=torch.long), lengths + p,
                                torch.tensor([tail] if tail else [], dtype=torch.long)])
            # a class's keys are the prefix rows, then its own rows
            seq_k = torch.repeat_interleave(torch.arange(num), lengths + p)
            off_k = torch.arange(total + num * p) - (starts + p * torch.arange(num))[seq_k]
            own_k = torch.where(off_k < p, off_k, starts[seq_k] + off_k)
            key_rows = torch.cat([torch.arange(p), own_k, torch.arange(p + total, rows)])
            cu_q = torch.cat([torch.zeros(1, dtype=torch.long), q_lens.cumsum(0)])
            cu_k = torch.cat([torch.zeros(1, dtype=torch.long), k_lens.cumsum(0)])
            ints += [key_rows, cu_q, cu_k]
            sizes += [key_rows.numel(), cu_q.numel(), cu_k.numel()]
            extra = dict(max_q=int(q_lens.max()), max_k=int(k_lens.max()))
        # one host-to-device copy for every index of the step
        moved = torch.cat(ints).to(device, non_blocking=True).split(sizes)
        layout = cls(prefix_len=p, num_seqs=num, tokens=total, rows=rows, max_len=s,
                     padded_seqs=c, lengths=lengths, positions=moved[0], last=moved[1],
                     q_rows=moved[2], k_rows=moved[3], out_slots=moved[4],
                     mask=None if mask is None else mask.to(device, non_blocking=True),
                     **extra)
        rest = list(moved[5:])
        if source_width is not None:
            layout.source_rows = rest.pop(0)
        if varlen:
            layout.key_rows = rest[0]
            layout.cu_seq_q = rest[1].to(torch.int32)
            layout.cu_seq_k = rest[2].to(torch.int32)
        return layout


def _padded_mask(i: torch.Tensor, q_len: torch.Tensor, p: int) -> torch.Tensor:
    """The padded path's mask [C, 1, S, P + S]: every prefix key (the prefix's own sequence:
    causally), own keys at or before the query that exist; padded queries keep key 0, so no
    row is all -inf."""
    causal = i[None, :] <= i[:, None]                                    # [S, S]
    own = causal & (i < q_len.clamp(min=1)[:, None])[:, None, :]         # [C, S, S]
    pre = torch.ones(len(q_len), len(i), p, dtype=torch.bool)
    if p:
        own[0] = False
        pre[0] = causal[:, :p]
    return torch.cat([pre, own], dim=-1).unsqueeze(1)


def _padded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      layout: PackedLayout) -> torch.Tensor:
    """Attention of packed rows [R, h, d] through per-sequence padding and one SDPA call."""
    c, s = layout.padded_seqs, layout.max_len
    heads, dim = q.shape[1], q.shape[2]
    qs = q.index_select(0, layout.q_rows).view(c, s, heads, dim).transpose(1, 2)
    ks, vs = (t.index_select(0, layout.k_rows).view(c, -1, heads, dim).transpose(1, 2)
              for t in (k, v))
    out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=layout.mask)
    return out.transpose(1, 2).reshape(c * s, heads, dim).index_select(0, layout.out_slots)


def _varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      layout: PackedLayout) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn
    if layout.prefix_len:
        k, v = k.index_select(0, layout.key_rows), v.index_select(0, layout.key_rows)
    # q is a strided view of the packed q/k/v projection; the kernel wants dense rows
    return varlen_attn(q.contiguous(), k, v, layout.cu_seq_q, layout.cu_seq_k, layout.max_q,
                       layout.max_k, window_size=(-1, 0))


def _block(block: nn.Module, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    attn: nn.MultiheadAttention = block.attn
    heads = attn.num_heads
    rows, width = x.shape
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias) \
        .view(rows, 3, heads, width // heads).unbind(1)
    attend = _varlen_attention if layout.uses_varlen else _padded_attention
    a = attend(q, k, v, layout).reshape(rows, width)
    x = x + block.ls_1(F.linear(a, attn.out_proj.weight, attn.out_proj.bias))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def packed_transformer(transformer: nn.Module, x: torch.Tensor,
                       layout: PackedLayout) -> torch.Tensor:
    """Hidden states [R, W] of packed rows ``x`` (positional embedding added) after every block
    of an open_clip ``Transformer`` (see :func:`~pomp_mm.shared_prefix.supports_shared_prefix`);
    the same, row for row, as running each sequence ``[prefix; own]`` alone under the causal
    mask."""
    for block in transformer.resblocks:
        x = _block(block, x, layout)
    return x

