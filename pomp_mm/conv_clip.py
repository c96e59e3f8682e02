"""Convolutional CLIP image towers as dense feature extractors (mmengine ``MODELS``).

A CNN CLIP pools its last feature map into the image embedding (average pooling then a
projection for open_clip's timm towers, attention pooling for CLIP's ModifiedResNet). Running that
same pooling head on a box of the map, or on each location, gives region and pixel embeddings in
CLIP's joint space without training (F-VLM, Kuo et al. 2023; MaskCLIP, Zhou et al. 2022), so a
head trained on seen classes can score unseen ones by their text embeddings. Registered in the
root registry: mmdet's and mmseg's configs both find :class:`OpenClipConvNet`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import nn

__all__ = ['OpenClipConvNet', 'conv_tower_kind', 'feature_map', 'pool_regions',
           'dense_embeddings', 'pool_grid', 'input_size']


def conv_tower_kind(visual: nn.Module) -> str:
    """'timm' (open_clip ``TimmModel``) or 'resnet' (``ModifiedResNet``).

    Raises:
        TypeError: ``visual`` is neither (e.g. a ViT: use ``OpenClipViT``).
    """
    if hasattr(visual, 'trunk') and hasattr(visual.trunk, 'forward_features') \
            and hasattr(visual.trunk, 'forward_head'):
        return 'timm'
    if hasattr(visual, 'attnpool') and hasattr(visual, 'layer4'):
        return 'resnet'
    raise TypeError(f'{type(visual).__name__} is not a convolutional open_clip image tower '
                    '(a timm trunk or ModifiedResNet); for a ViT use OpenClipViT')


def feature_map(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The tower's last feature map before pooling, [B, C, H/s, W/s]."""
    if conv_tower_kind(visual) == 'timm':
        return visual.trunk.forward_features(images)
    x = visual.stem(images)
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = layer(x)
    return x


def input_size(visual: nn.Module) -> int:
    """The square input side the tower was built for (224 when it does not say)."""
    size = getattr(visual, 'image_size', 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def pool_grid(visual: nn.Module) -> Optional[Tuple[int, int]]:
    """The map size the pooling head needs (attention pooling's position grid), or None."""
    if conv_tower_kind(visual) == 'resnet':
        side = int(round((visual.attnpool.positional_embedding.shape[0] - 1) ** 0.5))
        return side, side
    return None


def pool_regions(visual: nn.Module, maps: torch.Tensor) -> torch.Tensor:
    """[N, C, h, w] region maps -> [N, embed_dim]: the tower's own pooling head on each."""
    if conv_tower_kind(visual) == 'timm':
        return visual.head(visual.trunk.forward_head(maps, pre_logits=True))
    return visual.attnpool(maps)


def dense_embeddings(visual: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, embed_dim, H, W]: each location through the pooling head.

    Exact for average pooling (pooling one location is the location). For attention pooling,
    MaskCLIP's reading: each location's value projection then the output projection.
    """
    b, c, h, w = fmap.shape
    if conv_tower_kind(visual) == 'timm':
        cells = fmap.permute(0, 2, 3, 1).reshape(b * h * w, c, 1, 1)
        out = pool_regions(visual, cells)
    else:
        pool = visual.attnpool
        out = pool.c_proj(pool.v_proj(fmap.permute(0, 2, 3, 1).reshape(b * h * w, c)))
    return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)


@MODELS.register_module()
class OpenClipConvNet(BaseModule):
    """The last feature map of a frozen convolutional open_clip image tower, as a backbone.

    Args:
        clip_model: An open_clip model name or config dict (as :class:`PompTextEncoder`).
        pretrained: An open_clip tag or a local CLIP weights file.
        init_cfg: mmengine initialisation config (the weights come from ``pretrained``).

    Attributes:
        stride (int): Input pixels per map cell.
        channels (int): Channels of the map.
        embed_dim (int): Channels of the pooled (joint-space) embedding.
    """

    def __init__(self, clip_model: Union[str, Dict[str, Any]], pretrained: Optional[str] = None,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        from .clip import build_clip
        visual = build_clip(clip_model, pretrained).visual
        conv_tower_kind(visual)  # a clear error for a ViT
        self.visual = visual.eval()
        for p in self.visual.parameters():
            p.requires_grad_(False)
        size = input_size(visual)
        with torch.no_grad():
            probe = feature_map(self.visual, torch.zeros(1, 3, size, size))
            self.embed_dim = pool_regions(self.visual, probe).shape[-1]
        self.stride = size // probe.shape[-1]
        self.channels = probe.shape[1]

    def init_weights(self) -> None:
        """Nothing to draw: the weights were loaded from ``pretrained``."""
        self._is_init = True

    def train(self, mode: bool = True) -> 'OpenClipConvNet':
        super().train(mode)
        self.visual.eval()  # frozen, batch norm statistics included
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        dtype = next(self.visual.parameters()).dtype
        with torch.no_grad():
            return (feature_map(self.visual, x.to(dtype)).float(),)
