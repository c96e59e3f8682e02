"""Fixtures for tests, demos and CPU benchmarks: tiny models with random weights.

No registration side effects and no mmdet/mmseg imports: the toolkit fixtures are config
overrides, merged into the real configs so their structure stays the one users run.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

__all__ = ['TINY_SAN', 'tiny_detector']

#: Overrides that shrink the SAN ViT-B/16 configs to a tiny model with random weights (64-wide
#: 3-layer ViT, 10 queries, 64x64 inputs) for tests and benchmarks; pair it with
#: ``clip_model='tiny'`` (pomp_mm's tiny open_clip model) for the text side.
TINY_SAN = dict(
    pretrained=None,
    data_preprocessor=dict(size_divisor=64),
    image_encoder=dict(img_size=(32, 32), embed_dims=64, num_layers=3, num_heads=2,
                       out_indices=(1, 2)),
    decode_head=dict(
        deep_supervision_idxs=[],
        # fusion_index: one entry per CLIP feature map (out_indices + the origin)
        san_cfg=dict(clip_channels=64, embed_dims=32, num_queries=10, fusion_index=[0, 1, 2],
                     cfg_encoder=dict(num_encode_layer=2, num_heads=2, mlp_ratio=2),
                     cfg_decoder=dict(num_heads=2, embed_channels=32, mlp_channels=32)),
        maskgen_cfg=dict(sos_token_num=10, num_layers=1, embed_dims=64, num_heads=2,
                         mlp_ratio=2, out_dims=32),
        train_cfg=dict(num_points=256)))

#: A tiny Faster / Mask R-CNN (ResNet-18 at 1/8 width, 16-channel FPN): merged into the R50-FPN
#: configs, it keeps their structure and trains in seconds.
_TINY: Dict[str, Any] = dict(
    backbone=dict(depth=18, base_channels=8, init_cfg=None),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=16),
        bbox_head=dict(in_channels=16, fc_out_channels=32)),
    train_cfg=dict(rpn=dict(sampler=dict(num=64)), rcnn=dict(sampler=dict(num=32))),
)

_TINY_MASK: Dict[str, Any] = dict(
    roi_head=dict(
        mask_roi_extractor=dict(out_channels=16),
        mask_head=dict(in_channels=16, conv_out_channels=16)))


def tiny_detector(with_mask: bool = False) -> Dict[str, Any]:
    """Model overrides (a ``model=dict(...)`` to merge into an mmdet R50-FPN config)."""
    cfg = copy.deepcopy(_TINY)
    if with_mask:
        cfg['roi_head'].update(copy.deepcopy(_TINY_MASK['roi_head']))
    return cfg
