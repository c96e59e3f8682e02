"""Run a causal text transformer on many prompts that start with the same tokens, once.

POMP / CoOp prompts with the class name at the end are ``[SOS, ctx_1..ctx_n, name..., '.',
EOT]``: the first ``n + 1`` positions are identical for every class. Attention is causal, so
their hidden states never depend on what follows; they can be computed once (batch 1) and every
class only needs its own suffix, attending to the shared prefix's keys and values. The result is
the full computation's, up to float rounding; compute and the activations kept for backward
shrink from ``C x (P + S)`` to ``P + C x S`` positions.

Only open_clip's standard ``ResidualAttentionBlock`` (``nn.MultiheadAttention`` with packed
q/k/v weights) is handled; :func:`supports_shared_prefix` says whether a tower qualifies.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['supports_shared_prefix', 'shared_prefix_transformer']


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


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, L, W] -> [B, heads, L, W / heads]."""
    b, length, width = x.shape
    return x.view(b, length, num_heads, width // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, L, d] -> [B, L, heads * d]."""
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d)


def _attention(block: nn.Module, xp: torch.Tensor,
               xs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Self-attention of the prefix [1, P, W] and of the suffixes [B, S, W] over prefix + own
    earlier positions, with the block's weights."""
    attn: nn.MultiheadAttention = block.attn
    heads = attn.num_heads
    qp, kp, vp = (_heads(t, heads) for t in
                  F.linear(block.ln_1(xp), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1))
    qs, ks, vs = (_heads(t, heads) for t in
                  F.linear(block.ln_1(xs), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1))
    out_p = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)
    # Suffix queries see the whole prefix and their own suffix causally. The prefix keys and
    # values broadcast over the batch ([1, h, P, d]) instead of being copied per class.
    scale = 1.0 / math.sqrt(qs.shape[-1])
    s = xs.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=xs.device).triu(1)
    scores = torch.cat([torch.matmul(qs, kp.transpose(-1, -2)),
                        torch.matmul(qs, ks.transpose(-1, -2)).masked_fill(causal, float('-inf'))],
                       dim=-1) * scale
    probs = scores.softmax(dim=-1)
    p = kp.shape[2]
    out_s = torch.matmul(probs[..., :p], vp) + torch.matmul(probs[..., p:], vs)
    proj = attn.out_proj
    return (F.linear(_merge(out_p), proj.weight, proj.bias),
            F.linear(_merge(out_s), proj.weight, proj.bias))


def _block(block: nn.Module, xp: torch.Tensor,
           xs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    ap, as_ = _attention(block, xp, xs)
    xp = xp + block.ls_1(ap)
    xs = xs + block.ls_1(as_)
    xp = xp + block.ls_2(block.mlp(block.ln_2(xp)))
    xs = xs + block.ls_2(block.mlp(block.ln_2(xs)))
    return xp, xs


def shared_prefix_transformer(transformer: nn.Module, prefix: torch.Tensor,
                              suffix: torch.Tensor) -> torch.Tensor:
    """Hidden states of the suffix positions after all blocks.

    Args:
        transformer: An open_clip ``Transformer`` (see :func:`supports_shared_prefix`).
        prefix: The shared first positions [P, W] (positional embedding already added).
        suffix: Each sequence's remaining positions [B, S, W] (positional embedding added).

    Returns:
        [B, S, W]: what ``transformer(cat([prefix] * B, suffix), causal mask)`` gives at the
        suffix positions.
    """
    xp = prefix.unsqueeze(0)
    xs = suffix
    for block in transformer.resblocks:
        xp, xs = _block(block, xp, xs)
    return xs
