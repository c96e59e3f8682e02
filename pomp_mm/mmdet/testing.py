"""A tiny Faster / Mask R-CNN (ResNet-18 at 1/8 width, 16-channel FPN) for tests, demos and the
CPU benchmark: merged into the R50-FPN configs, it keeps their structure and trains in seconds.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

__all__ = ['tiny_detector']

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
