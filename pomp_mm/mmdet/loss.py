"""Sigmoid classification loss with sampled negative classes (Detic's federated loss).

With a 1,203-class vocabulary most classes are absent from any one image, and LVIS is not
exhaustively labelled, so a sigmoid loss over every class punishes many unlabelled positives.
:class:`FederatedSigmoidLoss` takes, per batch, the classes that appear in it plus negatives
drawn without replacement with probability ``image_count ** power`` up to ``num_sample_cats``
classes, and applies binary cross-entropy only to those columns.
"""
from __future__ import annotations

import json
import logging
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import nn

__all__ = ['FederatedSigmoidLoss', 'lvis_class_frequencies']

logger = logging.getLogger(__name__)


def lvis_class_frequencies(ann_file: str,
                           exclude_frequencies: Sequence[str] = ()) -> torch.Tensor:
    """Per-class ``image_count`` of an LVIS v1 annotation file, in category-id order.

    Args:
        ann_file: LVIS json (its ``categories`` carry ``image_count`` and ``frequency``).
        exclude_frequencies: Frequency groups to zero (``('r',)`` when rare annotations were
            removed for open-vocabulary training), so they are never sampled.
    """
    with open(ann_file, encoding='utf-8') as f:
        cats = json.load(f)['categories']
    cats = sorted(cats, key=lambda c: c['id'])
    missing = [c.get('name', c['id']) for c in cats if 'image_count' not in c]
    if missing:
        raise ValueError(f'{ann_file!r}: categories without image_count (not an LVIS v1 file?), '
                         f'e.g. {missing[:3]}')
    counts = torch.tensor([float(c['image_count']) for c in cats])
    for i, c in enumerate(cats):
        if c.get('frequency') in exclude_frequencies:
            counts[i] = 0.0
    return counts


@MODELS.register_module()
class FederatedSigmoidLoss(nn.Module):
    """Sigmoid cross-entropy over the classes present in the batch and sampled negatives.

    Takes the bbox head's ``C + 1`` scores (last column background, which gets no column of
    its own: a background region has all-zero targets).

    Args:
        num_sample_cats: Classes per batch (present ones plus sampled negatives); None uses
            every class (plain sigmoid cross-entropy).
        class_frequencies: Per-class weights for sampling negatives: a list, or an LVIS json
            path (its ``image_count``, read on first use); None samples uniformly. Classes
            of zero weight get no loss, whether or not ``num_sample_cats`` is set.
        exclude_frequencies: LVIS frequency groups given zero weight (with an LVIS json).
        power: Exponent applied to the frequencies (Detic: 0.5).
        loss_weight: Scale of the loss.
    """

    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True

    def __init__(self,
                 num_sample_cats: Optional[int] = 50,
                 class_frequencies: Union[None, str, Sequence[float]] = None,
                 exclude_frequencies: Sequence[str] = (),
                 power: float = 0.5,
                 loss_weight: float = 1.0):
        super().__init__()
        if num_sample_cats is not None and num_sample_cats < 1:
            raise ValueError(f'num_sample_cats must be >= 1 or None, got {num_sample_cats}')
        self.num_sample_cats = num_sample_cats
        self.class_frequencies = class_frequencies
        self.exclude_frequencies = tuple(exclude_frequencies)
        self.power = power
        self.loss_weight = loss_weight
        self._weights: Optional[torch.Tensor] = None

    def get_cls_channels(self, num_classes: int) -> int:
        return num_classes + 1

    def get_activation(self, cls_score: torch.Tensor) -> torch.Tensor:
        """Per-class sigmoid scores and a zero background column (what mmdet's NMS drops)."""
        scores = cls_score[:, :-1].sigmoid()
        return torch.cat([scores, scores.new_zeros(scores.shape[0], 1)], dim=1)

    def get_accuracy(self, cls_score: torch.Tensor,
                     labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Foreground accuracy (argmax over classes) on the positive regions."""
        num_classes = cls_score.shape[1] - 1
        pos = labels < num_classes
        if not pos.any():
            return {'acc': cls_score.new_tensor(100.0)}
        pred = cls_score[pos, :-1].argmax(dim=1)
        return {'acc': (pred == labels[pos]).float().mean() * 100}

    def sampling_weights(self, num_classes: int, device: torch.device) -> torch.Tensor:
        if self._weights is None:
            src = self.class_frequencies
            if src is None:
                weights = torch.ones(num_classes)
            elif isinstance(src, str):
                weights = lvis_class_frequencies(src, self.exclude_frequencies)
            else:
                weights = torch.as_tensor(list(src), dtype=torch.float32)
            if weights.numel() != num_classes:
                raise ValueError(f'class_frequencies has {weights.numel()} entries but the head '
                                 f'scores {num_classes} classes')
            weights = weights.float()
            # zero stays zero (0 ** 0 would be 1): those classes are never in the loss
            self._weights = torch.where(weights > 0, weights.pow(self.power),
                                        torch.zeros_like(weights))
        return self._weights.to(device)

    def sample_classes(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """A 0/1 mask [C] over the classes the loss looks at for this batch.

        Classes of zero frequency (excluded groups, or never seen) get no loss, with or without
        sampling (Detic's ``ignore_zero_cats``); the other classes present in ``labels`` are
        always in.
        """
        weights = None
        if self.class_frequencies is not None:
            weights = self.sampling_weights(num_classes, labels.device)
        if self.num_sample_cats is None:
            mask = torch.ones(num_classes, device=labels.device)
        else:
            mask = torch.zeros(num_classes, device=labels.device)
            present = labels[labels < num_classes].unique()
            mask[present] = 1.0
            prob = (weights if weights is not None else
                    self.sampling_weights(num_classes, labels.device)).clone()
            prob[present] = 0.0
            extra = min(self.num_sample_cats - present.numel(), int((prob > 0).sum()))
            if extra > 0:
                mask[torch.multinomial(prob, extra, replacement=False)] = 1.0
        if weights is not None:
            mask = mask * (weights > 0).to(mask.dtype)
        return mask

    def forward(self,
                cls_score: torch.Tensor,
                labels: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> torch.Tensor:
        num_classes = cls_score.shape[1] - 1
        logits = cls_score[:, :num_classes]
        target = F.one_hot(labels.clamp(max=num_classes), num_classes + 1)[:, :num_classes]
        loss = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype),
                                                  reduction='none')
        loss = loss * self.sample_classes(labels, num_classes)[None]
        if weight is not None:
            loss = loss * weight[:, None].to(loss.dtype)
        reduction = reduction_override or 'mean'
        if reduction == 'none':
            return self.loss_weight * loss.sum(dim=1)
        total = loss.sum()
        if reduction == 'mean':
            total = total / (avg_factor if avg_factor is not None else max(labels.numel(), 1))
        return self.loss_weight * total
