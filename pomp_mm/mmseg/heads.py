"""``PompSideAdapterCLIPHead`` (mmseg ``MODELS``): mmseg's ``SideAdapterCLIPHead`` with an
``init_weights`` that works without a pretrained checkpoint, and class masking in the loss."""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model.weight_init import normal_init
from mmseg.models.decode_heads import SideAdapterCLIPHead
from mmseg.registry import MODELS
from torch import Tensor


def _out_channels(num_classes: int) -> int:
    """Channels of the head's score map: one per class, plus "no object" for a single class
    (argmax over one channel would label every pixel)."""
    return num_classes + 1 if num_classes == 1 else num_classes


def _with_class_weight(losses, weight: List[float]) -> list:
    """Copies of the loss configs with ``weight`` on the classification cross-entropy."""
    losses = [dict(loss) for loss in (losses if isinstance(losses, (list, tuple)) else [losses])]
    cls = [loss for loss in losses if 'loss_cls' in loss.get('loss_name', '')]
    if len(cls) != 1:
        raise ValueError('no_object_weight needs exactly one classification loss '
                         f"(loss_name containing 'loss_cls') in loss_decode, found {len(cls)}")
    cls[0]['class_weight'] = weight
    return losses


@MODELS.register_module()
class PompSideAdapterCLIPHead(SideAdapterCLIPHead):
    """mmseg's ``SideAdapterCLIPHead`` with two changes.

    * ``init_weights`` works without a ``Pretrained_Part`` checkpoint: mmseg 1.2.2's
      ``RecWithAttnbias.init_weights(None)`` calls ``super().init_weights()`` on a plain
      ``nn.Module``, which has none (AttributeError). Without a checkpoint we do the rest of
      mmseg's initialisation and leave the recognition layers at PyTorch's defaults.
    * Classes set by :meth:`set_loss_excluded_classes` get no probability in the loss (their
      logits are set to the dtype's minimum before matching and the classification loss), so
      training is exactly that of a classifier over the remaining classes.
    * A one-class head predicts that class against SAN's "no object": its output has a second,
      "no object" channel (mmseg would otherwise threshold one sigmoid channel, and SAN's
      per-class scores are not probabilities). :meth:`set_num_classes` resizes the head.

    Args:
        num_classes: Number of classes (the text encoder's vocabulary size).
        no_object_weight: When given, the classification loss's ``class_weight`` becomes
            ``[1.0] * num_classes + [no_object_weight]``, so configs that change
            ``num_classes`` need not restate SAN's whole ``loss_decode`` list (lists replace,
            not merge, in mmengine configs). None keeps ``loss_decode`` as given.
        **kwargs: As ``SideAdapterCLIPHead``.
    """

    def __init__(self, num_classes: int, *args, no_object_weight: Optional[float] = None,
                 **kwargs) -> None:
        if no_object_weight is not None:
            kwargs['loss_decode'] = _with_class_weight(
                kwargs.get('loss_decode', []), [1.0] * num_classes + [float(no_object_weight)])
        super().__init__(num_classes, *args, **kwargs)
        self.out_channels = _out_channels(num_classes)
        self.loss_excluded_classes: Tuple[int, ...] = ()

    def set_num_classes(self, num_classes: int) -> None:
        """Classify ``num_classes`` classes (e.g. after the text encoder's vocabulary changed).

        Clears the loss mask (its ids named the old classes) and resizes a classification
        ``class_weight`` of the usual form ``[w] * old + [no_object]`` to ``[w] * num_classes +
        [no_object]``; other weight lists cannot be mapped to new classes and are left for
        :class:`OpenVocabEncoderDecoder`'s loss check to reject.

        Raises:
            ValueError: ``num_classes`` is below 1.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be a positive int, got {num_classes!r}')
        old = self.num_classes
        self.num_classes = num_classes
        self.out_channels = _out_channels(num_classes)
        if getattr(self, 'match_masks', None) is not None:
            self.match_masks.num_classes = num_classes  # its "no object" label
        self.loss_excluded_classes = ()
        losses = self.loss_decode
        for loss in losses if isinstance(losses, torch.nn.ModuleList) else [losses]:
            weight = getattr(loss, 'class_weight', None)
            if 'loss_cls' not in getattr(loss, 'loss_name', '') or weight is None \
                    or isinstance(weight, str) or len(weight) != old + 1:
                continue
            weight = [float(w) for w in weight]
            if len(set(weight[:-1])) == 1:
                loss.class_weight = weight[:1] * num_classes + weight[-1:]

    def set_loss_excluded_classes(self, class_ids: Iterable[int]) -> None:
        """Class ids (columns of the class logits) the loss must never predict."""
        ids = tuple(sorted({int(i) for i in class_ids}))
        bad = [i for i in ids if not 0 <= i < self.num_classes]
        if bad:
            raise ValueError(f'excluded class ids {bad} are outside 0..{self.num_classes - 1}')
        self.loss_excluded_classes = ids

    def init_weights(self) -> None:
        """mmseg's initialisation, also when no pretrained checkpoint is given."""
        init_cfg = self.init_cfg
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained_Part':
            super().init_weights()
        else:
            # What mmseg's init_weights does minus the crashing call (see the class docstring).
            self.side_adapter_network.init_weights()
            if hasattr(self.rec_with_attnbias, 'sos_token'):
                normal_init(self.rec_with_attnbias.sos_token, std=0.02)
        self._is_init = True

    def forward(self, inputs: Tuple[Tensor, List[Tensor], Tensor],
                deep_supervision_idxs: List[int]) -> Tuple[List]:
        """mmseg's forward, with the class embeddings in the head's dtype."""
        imgs, clip_feature, class_embeds = inputs
        # Text encoders may return float32 whatever their weights (PompTextEncoder normalises
        # in float32); after model.half() SAN's einsum would then mix float32 and float16.
        # Under autocast the parameters stay float32, so nothing changes there.
        class_embeds = class_embeds.to(next(self.parameters()).dtype)
        return super().forward([imgs, clip_feature, class_embeds], deep_supervision_idxs)

    def predict_by_feat(self, seg_logits: List[Tensor], batch_img_metas: List[dict]) -> Tensor:
        """Per-pixel class scores; with one class, plus a last "no object" channel."""
        if self.out_channels == self.num_classes:
            return super().predict_by_feat(seg_logits, batch_img_metas)
        mask_pred, cls_score = seg_logits
        if isinstance(batch_img_metas[0]['img_shape'], torch.Size):  # slide inference
            size = batch_img_metas[0]['img_shape']
        else:
            size = batch_img_metas[0].get('pad_shape', batch_img_metas[0]['img_shape'])[:2]
        mask_pred = F.interpolate(mask_pred, size=size, mode='bilinear', align_corners=False)
        # As mmseg's, but the "no object" probability is kept: with one class, the class
        # column alone would make every pixel that class under argmax.
        return torch.einsum('bqc,bqhw->bchw', F.softmax(cls_score, dim=-1), mask_pred.sigmoid())

    def loss_by_feat(self, all_cls_scores: List[Tensor], all_mask_preds: List[Tensor],
                     batch_gt_instances: list) -> dict:
        """``SideAdapterCLIPHead.loss_by_feat`` with the excluded classes masked out."""
        if self.loss_excluded_classes:
            all_cls_scores = [self._mask_excluded(s) for s in all_cls_scores]
        return super().loss_by_feat(all_cls_scores, all_mask_preds, batch_gt_instances)

    def _mask_excluded(self, cls_scores: Tensor) -> Tensor:
        if cls_scores.shape[-1] != self.num_classes + 1:
            raise ValueError(f'class logits have {cls_scores.shape[-1]} columns, expected '
                             f'num_classes + 1 = {self.num_classes + 1} (the text encoder must '
                             'return one row per class plus the background row, cat_bg=True)')
        mask = torch.zeros(cls_scores.shape[-1], dtype=torch.bool, device=cls_scores.device)
        mask[list(self.loss_excluded_classes)] = True
        # The dtype's minimum, not -inf: softmax gives it exactly 0 without inf - inf NaNs.
        return cls_scores.masked_fill(mask, torch.finfo(cls_scores.dtype).min)
