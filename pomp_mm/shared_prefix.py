"""Run a causal text transformer on many prompts that start with the same tokens, once.

POMP / CoOp prompts with the class name at the end are ``[SOS, ctx_1..ctx_n, name..., '.',
EOT]``: the first ``n + 1`` positions are identical for every class. Attention is causal, so
their hidden states never depend on what follows; they can be computed once (batch 1) and every
class only needs its own suffix, attending to the shared prefix's keys and values. The result is
the full computation's, up to float rounding; compute and the activations kept for backward
shrink from ``C x (P + S)`` to ``P + C x S`` positions.

Suffixes come in groups of equal length (a caller groups classes by name length) and are packed
into one tensor for all position-wise work, so no position is padding: a step's cost follows the
sum of its names' lengths, not its count times the longest name.

Only open_clip's standard ``ResidualAttentionBlock`` (``nn.MultiheadAttention`` with packed
q/k/v weights) is handled; :func:`supports_shared_prefix` says whether a tower qualifies.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['supports_shared_prefix', 'shared_prefix_transformer', 'length_groups']


def supports_shared_prefix(transformer: nn.Module) -> bool:
    """True when every block of ``transformer`` is an open_clip ``ResidualAttentionBlock``
    with a standard packed-projection ``nn.MultiheadAttention``."""
    from open_clip.transformer import ResidualAttentionBlock
    blocks = getattr(transformer, 'resblocks', None)
    if not blocks:
        return False
    for block in blocks:
        attn = getattr(block, 'attn', None)
        if (type(block) is not ResidualAttentionBlock or hasattr(block, 'ln_1_kv')
                or not isinstance(attn, nn.MultiheadAttention)
                or attn.in_proj_weight is None or attn.bias_k is not None):
            return False
    return True


def length_groups(eot: torch.Tensor) -> List[Tuple[int, int, int]]:
    """``(start, stop, eot)`` runs of equal EOT position in ``eot`` (sorted ascending): each
    run's sequences end at the same position, so they pack without padding."""
    values, counts = torch.unique_consecutive(eot, return_counts=True)
    stops = counts.cumsum(0).tolist()
    return [(stop - n, stop, v) for v, n, stop in zip(values.tolist(), counts.tolist(), stops)]


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, L, W] -> [B, heads, L, W / heads]."""
    b, length, width = x.shape
    return x.view(b, length, num_heads, width // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, L, d] -> [B, L, heads * d]."""
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d)


def _attention(block: nn.Module, xp: torch.Tensor, xs: torch.Tensor,
               shapes: Sequence[Tuple[int, int]],
               masks: Dict[int, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Self-attention of the prefix [1, P, W] and of the packed suffixes [T, W] (groups of
    ``shapes`` = (B, S) sequences each) over prefix + own earlier positions; ``masks[S]`` is
    True above the diagonal of [S, S]."""
    attn: nn.MultiheadAttention = block.attn
    heads = attn.num_heads
    qp, kp, vp = (_heads(t, heads) for t in
                  F.linear(block.ln_1(xp), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1))
    out_p = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)
    # Suffix tokens go head-major, [h, T, d]: one matmul per head against the prefix keys and
    # values [h, P, d] then serves every class, where broadcasting [B, h, S, d] against
    # [1, h, P, d] would copy the prefix once per class (and keep the copies for backward).
    total, width = xs.shape
    dim = width // heads
    q, k, v = (F.linear(block.ln_1(xs), attn.in_proj_weight, attn.in_proj_bias)
               .view(total, 3, heads, dim).permute(1, 2, 0, 3).contiguous().unbind(0))
    kp, vp = kp[0], vp[0]
    p = kp.shape[1]
    scale = 1.0 / math.sqrt(dim)
    outs, start = [], 0
    for b, s in shapes:
        n = b * s
        qg, kg, vg = (t[:, start:start + n] for t in (q, k, v))
        start += n
        own = torch.matmul(qg.reshape(heads, b, s, dim), kg.reshape(heads, b, s, dim)
                           .transpose(-1, -2)).masked_fill(masks[s], float('-inf'))
        scores = torch.cat([torch.matmul(qg, kp.transpose(-1, -2)),
                            own.view(heads, n, s)], dim=-1) * scale
        probs = scores.softmax(dim=-1)
        own_out = torch.matmul(probs[..., p:].reshape(heads, b, s, s),
                               vg.reshape(heads, b, s, dim))
        outs.append(torch.matmul(probs[..., :p], vp) + own_out.view(heads, n, dim))
    out_s = (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)).transpose(0, 1)
    proj = attn.out_proj
    return (F.linear(_merge(out_p), proj.weight, proj.bias),
            F.linear(out_s.reshape(total, width), proj.weight, proj.bias))


def _block(block: nn.Module, xp: torch.Tensor, xs: torch.Tensor,
           shapes: Sequence[Tuple[int, int]],
           masks: Dict[int, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    ap, as_ = _attention(block, xp, xs, shapes, masks)
    xp = xp + block.ls_1(ap)
    xs = xs + block.ls_1(as_)
    xp = xp + block.ls_2(block.mlp(block.ln_2(xp)))
    xs = xs + block.ls_2(block.mlp(block.ln_2(xs)))
    return xp, xs


def shared_prefix_transformer(transformer: nn.Module, prefix: torch.Tensor,
                              suffixes: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Hidden states of the suffix positions after all blocks.

    Args:
        transformer: An open_clip ``Transformer`` (see :func:`supports_shared_prefix`).
        prefix: The shared first positions [P, W] (positional embedding already added).
        suffixes: Groups of sequences' remaining positions, [B, S, W] each (positional
            embedding added); groups may differ in S, so sequences of different lengths need
            no padding. They are packed into one [sum B x S, W] tensor for everything but
            attention.

    Returns:
        Per group [B, S, W]: what ``transformer(cat([prefix] * B, suffix), causal mask)``
        gives at the suffix positions.
    """
    if not suffixes:
        raise ValueError('no suffixes to encode')
    shapes = [(s.shape[0], s.shape[1]) for s in suffixes]
    width = prefix.shape[-1]
    xp = prefix.unsqueeze(0)
    xs = torch.cat([s.reshape(-1, width) for s in suffixes])
    masks = {s: torch.ones(s, s, dtype=torch.bool, device=xs.device).triu(1)
             for _, s in shapes}
    for block in transformer.resblocks:
        xp, xs = _block(block, xp, xs, shapes, masks)
    return [part.view(b, s, width)
            for (b, s), part in zip(shapes, xs.split([b * s for b, s in shapes]))]
