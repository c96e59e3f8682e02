"""``OpenClipViT`` (mmdet ``MODELS``): a frozen open_clip ViT image tower as a detector backbone.

Region features pooled from a frozen CLIP keep CLIP's semantics, so a detector head trained on
base classes can score classes it never saw through their text embeddings (the F-VLM design).
The tower runs at the detector's input size: its position embedding is interpolated from the
grid it was trained at. With ``patch_embed_out`` it also (or only) returns the patch embedding
map, which :class:`~pomp_mm.mmdet.roi_extractors.ClipRoIExtractor` turns into CLIP region
embeddings.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule

__all__ = ['OpenClipViT']


def fused_block(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An open_clip ``ResidualAttentionBlock`` on batch-first ``x`` without a mask, its
    attention through ``F.scaled_dot_product_attention``.

    Same result as ``block(x)`` up to float rounding, for blocks that
    :func:`pomp_mm.shared_prefix.supports_shared_prefix` accepts. Why: on CPU,
    ``nn.MultiheadAttention``'s inference path takes 1.4x as long as this one for a 4-block
    ViT on 512 RoIs of 65 tokens, where the frozen tower is most of a detector's step.
    """
    attn = block.attn
    b, n, width = x.shape
    heads = attn.num_heads
    q, k, v = (F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
               .view(b, n, 3, heads, width // heads).permute(2, 0, 3, 1, 4))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, width)
    x = x + block.ls_1(F.linear(out, attn.out_proj.weight, attn.out_proj.bias))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def frozen_blocks(transformer: torch.nn.Module) -> List[Callable[[torch.Tensor], torch.Tensor]]:
    """The blocks of a frozen open_clip ``Transformer`` as functions of batch-first tokens:
    :func:`fused_block` where the blocks are standard, the blocks themselves otherwise."""
    from ..shared_prefix import supports_shared_prefix
    if supports_shared_prefix(transformer):
        return [partial(fused_block, block) for block in transformer.resblocks]
    if getattr(transformer, 'batch_first', True):
        return list(transformer.resblocks)
    return [lambda x, block=block: block(x.transpose(0, 1)).transpose(0, 1)
            for block in transformer.resblocks]


@MODELS.register_module()
class OpenClipViT(BaseModule):
    """Patch-token maps of a frozen open_clip ViT.

    Args:
        clip_model: An open_clip model name or config dict (as :class:`PompTextEncoder`).
        pretrained: An open_clip tag or a local CLIP weights file.
        out_indices: Blocks whose output tokens are returned, as [B, width, H/p, W/p] maps.
        patch_embed_out: Return the patch embedding map (``conv1``'s output, before the class
            token and position embedding) first; with ``out_indices=()`` no block runs.
        concat_outputs: Return one map, the outputs stacked along channels (e.g. an RPN that
            reads all of them and a :class:`ClipRoIExtractor` that reads the first ``width``).
        init_cfg: mmengine initialisation config (the weights come from ``pretrained``).
    """

    def __init__(self, clip_model: Union[str, Dict[str, Any]], pretrained: Optional[str] = None,
                 out_indices: Sequence[int] = (-1,), patch_embed_out: bool = False,
                 concat_outputs: bool = False, init_cfg=None):
        super().__init__(init_cfg)
        from ..clip import build_clip
        visual = build_clip(clip_model, pretrained).visual
        blocks = getattr(getattr(visual, 'transformer', None), 'resblocks', None)
        if blocks is None or not hasattr(visual, 'conv1'):
            raise TypeError(f'{clip_model!r} has no open_clip ViT image tower (conv1 + '
                            'transformer.resblocks); OpenClipViT needs one')
        n = len(blocks)
        if not out_indices and not patch_embed_out:
            raise ValueError('OpenClipViT has nothing to return: give out_indices or set '
                             'patch_embed_out=True')
        self.patch_embed_out = patch_embed_out
        self.concat_outputs = concat_outputs
        self.out_indices = tuple(i % n for i in out_indices)
        if any(not -n <= i < n for i in out_indices):
            raise ValueError(f'out_indices {tuple(out_indices)} out of range for {n} blocks')
        self.visual = visual.eval()
        for p in self.visual.parameters():
            p.requires_grad_(False)
        self.patch_size = visual.conv1.kernel_size[0]
        self.width = visual.conv1.out_channels
        self._blocks = frozen_blocks(visual.transformer)

    def init_weights(self) -> None:
        """Nothing to draw: the weights were loaded from ``pretrained``."""
        self._is_init = True

    def train(self, mode: bool = True) -> 'OpenClipViT':
        super().train(mode)
        self.visual.eval()  # frozen
        return self

    def _positions(self, h: int, w: int) -> torch.Tensor:
        pos = self.visual.positional_embedding
        cls, grid = pos[:1], pos[1:]
        side = int(round(grid.shape[0] ** 0.5))
        if (h, w) != (side, side):
            grid = F.interpolate(grid.reshape(1, side, side, -1).permute(0, 3, 1, 2),
                                 size=(h, w), mode='bicubic', align_corners=False)
            grid = grid.permute(0, 2, 3, 1).reshape(h * w, -1)
        return torch.cat([cls, grid])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        v = self.visual
        with torch.no_grad():
            x = v.conv1(x.to(v.conv1.weight.dtype))  # [B, W, h, w]
            b, c, h, w = x.shape
            outs = [x.float()] if self.patch_embed_out else []
            if not self.out_indices:
                return self._pack(outs)
            x = x.flatten(2).transpose(1, 2)
            cls = v.class_embedding.to(x.dtype).expand(b, 1, -1)
            x = torch.cat([cls, x], dim=1) + self._positions(h, w).to(x.dtype)
            x = v.ln_pre(x)
            for i, block in enumerate(self._blocks):
                x = block(x)
                if i in self.out_indices:
                    outs.append(x[:, 1:].transpose(1, 2).reshape(b, c, h, w).float())
        return self._pack(outs)

    def _pack(self, outs) -> Tuple[torch.Tensor, ...]:
        return (torch.cat(outs, dim=1),) if self.concat_outputs else tuple(outs)
