"""The image trunk of world CLIP v3, registered with timm as ``pomp_world_cnn``.

A plain VGG-style CNN (Simonyan and Zisserman, ICLR 2015): a 3x3 stride-2 convolution (32
channels), then pairs of 3x3 convolutions of 64 / 128 / 256 channels with 2x2 max pooling
between them, batch norm and ReLU after each, global average pooling; 1.2 M parameters. At 64 px
it keeps 32 x 32 maps of 64 channels through its first pair, where the objects' outlines are
(pilots in docs/synthetic_world.md: open_clip's ModifiedResNet and a residual timm ByobNet of
similar size learned the 20 shapes several times slower). open_clip builds it through its timm
image tower (``timm_model_name``), which needs ``reset_classifier`` and ``num_features``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ['TRUNK_NAME', 'WorldCNN', 'register_trunk']

TRUNK_NAME = 'pomp_world_cnn'
_STAGES = ((64, 64), (128, 128), (256, 256))


class WorldCNN(nn.Module):
    """timm-style model: ``forward_features`` -> [B, 256, H/8, W/8], head -> [B, num_classes]
    (``num_classes=0``: the pooled 256 features)."""

    def __init__(self, num_classes: int = 0, global_pool: str = 'avg', in_chans: int = 3,
                 stem_chs: int = 32) -> None:
        super().__init__()
        from timm.layers import ClassifierHead, ConvNormAct
        layers = [ConvNormAct(in_chans, stem_chs, 3, stride=2)]
        chs = stem_chs
        for i, widths in enumerate(_STAGES):
            if i:
                layers.append(nn.MaxPool2d(2))
            for width in widths:
                layers.append(ConvNormAct(chs, width, 3))
                chs = width
        self.features = nn.Sequential(*layers)
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes, pool_type=global_pool)
        self.pretrained_cfg = self.default_cfg = {
            'architecture': TRUNK_NAME, 'input_size': (in_chans, 64, 64), 'num_classes': 0,
            'pool_size': None, 'first_conv': 'features.0.conv', 'classifier': 'head.fc'}

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def register_trunk() -> None:
    """Make ``pomp_world_cnn`` a timm model name (idempotent; no pretrained weights)."""
    import timm
    if TRUNK_NAME in timm.list_models():
        return
    from timm.models import register_model

    def pomp_world_cnn(pretrained: bool = False, **kwargs) -> WorldCNN:
        if pretrained:
            raise ValueError(f'{TRUNK_NAME} has no pretrained weights in timm; the world CLIP\'s '
                             'are loaded by open_clip from its own file')
        for key in ('pretrained_cfg', 'pretrained_cfg_overlay', 'cache_dir'):
            kwargs.pop(key, None)
        return WorldCNN(**kwargs)
    register_model(pomp_world_cnn)
