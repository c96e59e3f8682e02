"""``ClipRoIExtractor`` (mmdet ``MODELS``): each RoI as a CLIP image embedding.

A ViT CLIP pools an image through its class token, so its patch tokens averaged over a box do
not land near the box's text embedding. This extractor resamples the box from the patch
embedding map onto the CLIP's own token grid and runs the frozen tower on it, as if the box
were a whole image (crop and classify, without re-encoding pixels): the region embedding lives
in CLIP's joint space, so classes without boxes in training can still be scored by their text.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import torch
from mmdet.models.roi_heads.roi_extractors import BaseRoIExtractor
from mmdet.registry import MODELS

from .backbones import frozen_blocks

__all__ = ['ClipRoIExtractor', 'ClipPoolRoIExtractor']


@MODELS.register_module()
class ClipRoIExtractor(BaseRoIExtractor):
    """RoIs -> [N, embed_dim, 1, 1] embeddings of a frozen open_clip ViT.

    Reads the patch embedding map of :class:`~pomp_mm.mmdet.backbones.OpenClipViT`
    (``patch_embed_out=True``) at stride ``patch_size``: the first ``width`` channels of the
    first feature map (more channels, e.g. stacked block outputs for the RPN, are ignored).

    Args:
        clip_model: An open_clip model name or config dict (as :class:`PompTextEncoder`).
        pretrained: An open_clip tag or a local CLIP weights file.
        roi_layer: An ``mmcv.ops`` RoI layer config; its ``output_size`` defaults to the CLIP's
            token grid (the size it was trained at).
        chunk_size: RoIs per forward pass of the tower; it bounds memory. Default: 64 on CPU,
            where a chunk's activations then stay in cache (the tower runs 1.4-1.6x faster than
            at 512 on 1-2 cores), 512 elsewhere.
        init_cfg: mmengine initialisation config (the weights come from ``pretrained``).
    """

    def __init__(self, clip_model: Union[str, Dict[str, Any]], pretrained: Optional[str] = None,
                 roi_layer: Optional[Dict[str, Any]] = None, chunk_size: Optional[int] = None,
                 init_cfg=None):
        from ..clip import build_clip
        visual = build_clip(clip_model, pretrained).visual
        if not hasattr(visual, 'conv1') or getattr(visual, 'attn_pool', None) is not None:
            raise TypeError(f'{clip_model!r} has no class-token open_clip ViT image tower; '
                            'ClipRoIExtractor needs one')
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f'chunk_size must be positive, got {chunk_size}')
        grid = visual.grid_size
        layer = dict(type='RoIAlign', output_size=tuple(grid), sampling_ratio=0, aligned=True)
        layer.update(roi_layer or {})
        size = layer['output_size']
        size = (size, size) if isinstance(size, int) else tuple(size)
        if size != tuple(grid):
            raise ValueError(f'roi_layer output_size {size} must be the CLIP token grid '
                             f'{tuple(grid)}: the tower has a position embedding for that grid')
        stride = visual.conv1.kernel_size[0]
        super().__init__(roi_layer=layer, out_channels=visual.output_dim,
                         featmap_strides=[stride], init_cfg=init_cfg)
        self.visual = visual.eval()
        for p in self.visual.parameters():
            p.requires_grad_(False)
        self.chunk_size = chunk_size
        self._blocks = frozen_blocks(visual.transformer)

    def init_weights(self) -> None:
        """Nothing to draw: the weights were loaded from ``pretrained``."""
        self._is_init = True

    def train(self, mode: bool = True) -> 'ClipRoIExtractor':
        super().train(mode)
        self.visual.eval()  # frozen
        return self

    def _embed(self, patches: torch.Tensor) -> torch.Tensor:
        """[n, width, gh, gw] patch embeddings -> [n, embed_dim], open_clip's path after conv1."""
        v = self.visual
        x = patches.flatten(2).transpose(1, 2).to(v.class_embedding.dtype)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(x)
        for block in self._blocks:
            x = block(x)
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled

    def forward(self, feats: Sequence[torch.Tensor], rois: torch.Tensor,
                roi_scale_factor: Optional[float] = None) -> torch.Tensor:
        """Embed ``rois`` ([N, 5]: batch index, x1, y1, x2, y2 in input pixels)."""
        if roi_scale_factor is not None:
            rois = self.roi_rescale(rois, roi_scale_factor)
        width = self.visual.conv1.out_channels
        if feats[0].shape[1] < width:
            raise ValueError(f'ClipRoIExtractor expects the patch embedding map first '
                             f'({width} channels; OpenClipViT with patch_embed_out=True), got '
                             f'{feats[0].shape[1]} channels')
        patches = feats[0][:, :width].contiguous()  # mmcv RoIAlign reads raw memory
        out = patches.new_zeros(rois.shape[0], self.out_channels)
        with torch.no_grad():
            chunk = self.chunk_size or (64 if patches.device.type == 'cpu' else 512)
            for i in range(0, rois.shape[0], chunk):
                part = rois[i:i + chunk]
                out[i:i + len(part)] = self._embed(self.roi_layers[0](patches, part)).float()
        return out[:, :, None, None]


@MODELS.register_module()
class ClipPoolRoIExtractor(BaseRoIExtractor):
    """RoIs -> [N, embed_dim, 1, 1] embeddings of a frozen convolutional open_clip tower.

    RoIAlign on the last feature map of :class:`~pomp_mm.conv_clip.OpenClipConvNet`, then the
    tower's own pooling head (average pooling and projection, or attention pooling) on each
    box: the F-VLM region embedding. On the world CNN it classifies ground-truth scene boxes
    zero-shot at 78 % (20-way; ``tools/synthetic/ov.py probe``).

    Args:
        clip_model: An open_clip model name or config dict (as :class:`PompTextEncoder`).
        pretrained: An open_clip tag or a local CLIP weights file.
        roi_layer: An ``mmcv.ops`` RoI layer config; ``output_size`` defaults to 4, or to the
            attention pool's grid, which it must then be.
        init_cfg: mmengine initialisation config (the weights come from ``pretrained``).
    """

    def __init__(self, clip_model: Union[str, Dict[str, Any]], pretrained: Optional[str] = None,
                 roi_layer: Optional[Dict[str, Any]] = None, init_cfg=None):
        from ..conv_clip import OpenClipConvNet, pool_grid
        tower = OpenClipConvNet(clip_model, pretrained)
        grid = pool_grid(tower.visual)
        layer = dict(type='RoIAlign', output_size=grid or (4, 4), sampling_ratio=0,
                     aligned=True)
        layer.update(roi_layer or {})
        size = layer['output_size']
        size = (size, size) if isinstance(size, int) else tuple(size)
        if grid is not None and size != grid:
            raise ValueError(f'roi_layer output_size {size} must be the attention pool\'s grid '
                             f'{grid}: its position embedding is for that grid')
        super().__init__(roi_layer=layer, out_channels=tower.embed_dim,
                         featmap_strides=[tower.stride], init_cfg=init_cfg)
        self.visual = tower.visual  # frozen by OpenClipConvNet
        self.channels = tower.channels

    def init_weights(self) -> None:
        """Nothing to draw: the weights were loaded from ``pretrained``."""
        self._is_init = True

    def train(self, mode: bool = True) -> 'ClipPoolRoIExtractor':
        super().train(mode)
        self.visual.eval()  # frozen
        return self

    def forward(self, feats: Sequence[torch.Tensor], rois: torch.Tensor,
                roi_scale_factor: Optional[float] = None) -> torch.Tensor:
        """Embed ``rois`` ([N, 5]: batch index, x1, y1, x2, y2 in input pixels)."""
        from ..conv_clip import pool_regions
        if roi_scale_factor is not None:
            rois = self.roi_rescale(rois, roi_scale_factor)
        if feats[0].shape[1] != self.channels:
            raise ValueError(f'ClipPoolRoIExtractor expects the tower\'s last feature map '
                             f'({self.channels} channels; OpenClipConvNet), got '
                             f'{feats[0].shape[1]} channels')
        with torch.no_grad():
            maps = self.roi_layers[0](feats[0].contiguous(), rois)
            out = pool_regions(self.visual, maps.to(next(self.visual.parameters()).dtype))
        return out.float()[:, :, None, None]
