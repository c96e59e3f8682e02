"""Open-vocabulary decode heads (mmseg ``MODELS``).

``PompSideAdapterCLIPHead``: mmseg's ``SideAdapterCLIPHead`` (SAN, CLIP ViT) with an
``init_weights`` that works without a pretrained checkpoint, and class masking in the loss.
``PompDenseCLIPHead``: per-pixel CLIP embeddings of a convolutional CLIP (``OpenClipConvNet``)
plus a learned residual, scored against the class embeddings, with the same class masking.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model.weight_init import normal_init
from mmseg.models.decode_heads import SideAdapterCLIPHead
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor, nn

from ..clip import build_clip
from ..conv_clip import conv_tower_kind, dense_embeddings, feature_map, input_size


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

    #: The class logits end with SAN's "no object" column, scored against the text encoder's
    #: background row (``cat_bg=True``); :class:`OpenVocabEncoderDecoder` checks it.
    needs_background_row = True

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


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f'PompDenseCLIPHead needs num_classes >= 2, got {num_classes!r}: it '
                         'scores pixels against the classes only, with no "no object" output, '
                         'so one class would label every pixel (add a class such as '
                         '"background")')
    return num_classes


@MODELS.register_module()
class PompDenseCLIPHead(BaseDecodeHead):
    """Per-pixel classification in the joint space of a frozen convolutional CLIP.

    Each location of the image encoder's map (:class:`~pomp_mm.conv_clip.OpenClipConvNet`) goes
    through the CLIP's own pooling head (:func:`~pomp_mm.conv_clip.dense_embeddings`), which
    gives its zero-shot CLIP embedding (MaskCLIP, Zhou et al. 2022; F-VLM, Kuo et al. 2023).
    A learned residual (3x3 convolutions on the same map, the last one zero-initialised, so
    training starts exactly at zero-shot CLIP) is added; the sum is L2-normalised and scored by
    cosine against the L2-normalised class embeddings, times a learned temperature (LSeg, Li et
    al. 2022). Only the residual and the temperature train: unseen classes keep CLIP's text
    embeddings, and the frozen part keeps the pixels in CLIP's space.

    One output channel per class and no background row: the text encoder needs
    ``cat_bg=False`` (:class:`OpenVocabEncoderDecoder` checks), and unlabelled pixels are the
    ignore index. Classes set by :meth:`set_loss_excluded_classes` get no probability in the
    loss, as in :class:`PompSideAdapterCLIPHead`.

    Args:
        num_classes: Number of classes (the text encoder's vocabulary size), at least 2.
        clip_model: The image encoder's open_clip model name or config dict; the head builds
            its own frozen copy of the tower for the pooling head.
        pretrained: The image encoder's open_clip tag or local CLIP weights file.
        in_channels: Channels of the image encoder's map; None reads them from the tower.
        channels: Width of the residual's hidden convolutions.
        num_convs: Hidden 3x3 convolutions of the residual before its zero-initialised last
            3x3 convolution (0: a single, linear one).
        logit_scale_init: Initial temperature (the factor, not its log); None takes the
            CLIP's own ``logit_scale.exp()``.
        learn_logit_scale: Train the temperature (its log), as CLIP does.
        max_logit_scale: Upper clamp of the temperature (CLIP's 100).
        norm_cfg: Normalisation of the hidden convolutions (None: none, as batch statistics
            of a few images per step are noisy).
        act_cfg: Activation of the hidden convolutions.
        **kwargs: ``BaseDecodeHead``'s ``loss_decode``, ``ignore_index``, ``align_corners``,
            ``sampler``, ``in_index``, ``init_cfg``.

    Raises:
        ValueError: ``num_classes`` below 2; ``in_channels`` that are not the tower's; at run
            time, class or map shapes that do not fit.
        TypeError: The CLIP's image tower is not convolutional (a ViT: use SAN).
    """

    #: One text row per class: no "no object" column (see the class docstring).
    needs_background_row = False

    def __init__(self,
                 num_classes: int,
                 clip_model: Union[str, Dict[str, Any]],
                 pretrained: Optional[str] = None,
                 in_channels: Optional[int] = None,
                 channels: int = 128,
                 num_convs: int = 2,
                 logit_scale_init: Optional[float] = None,
                 learn_logit_scale: bool = True,
                 max_logit_scale: float = 100.0,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 **kwargs) -> None:
        _check_num_classes(num_classes)
        if isinstance(num_convs, bool) or not isinstance(num_convs, int) or num_convs < 0:
            raise ValueError(f'num_convs must be an int >= 0, got {num_convs!r}')
        clip = build_clip(clip_model, pretrained)
        visual = clip.visual
        conv_tower_kind(visual)  # a clear error for a ViT
        size = input_size(visual)
        with torch.no_grad():
            tower_channels = feature_map(visual, torch.zeros(1, 3, size, size)).shape[1]
        if in_channels is None:
            in_channels = tower_channels
        elif in_channels != tower_channels:
            raise ValueError(f'in_channels={in_channels} but the map of {clip_model!r} has '
                             f'{tower_channels} channels; leave in_channels unset')
        # Neither dropout nor BaseDecodeHead's conv_seg: the classifier is the text embeddings.
        kwargs.setdefault('init_cfg', None)
        super().__init__(in_channels, channels, num_classes=num_classes,
                         out_channels=num_classes, dropout_ratio=0.0, norm_cfg=norm_cfg,
                         act_cfg=act_cfg, **kwargs)
        del self.conv_seg  # unused parameters would stall DDP without find_unused_parameters
        self.clip_visual = visual.eval()  # frozen with the image encoder's weights
        self.embed_dim = int(self._dense_clip(torch.zeros(1, in_channels, 1, 1)).shape[1])
        hidden = [ConvModule(in_channels if i == 0 else channels, channels, 3, padding=1,
                             norm_cfg=norm_cfg, act_cfg=act_cfg) for i in range(num_convs)]
        self.residual = nn.Sequential(
            *hidden, nn.Conv2d(channels if num_convs else in_channels, self.embed_dim, 3,
                               padding=1))
        scale = float(clip.logit_scale.exp()) if logit_scale_init is None else logit_scale_init
        if not 0 < scale <= max_logit_scale:
            raise ValueError(f'logit_scale_init must be in (0, max_logit_scale='
                             f'{max_logit_scale}], got {scale!r}')
        log_scale = torch.tensor(math.log(scale))
        if learn_logit_scale:
            self.logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer('logit_scale', log_scale)
        self.max_logit_scale = float(max_logit_scale)
        self.loss_excluded_classes: Tuple[int, ...] = ()
        self._zero_last()

    # ---------------------------------------------------------------- set-up
    def _zero_last(self) -> None:
        nn.init.zeros_(self.residual[-1].weight)
        nn.init.zeros_(self.residual[-1].bias)

    def init_weights(self) -> None:
        """Keep the CLIP tower as loaded and restart the residual at zero (zero-shot CLIP)."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        # OpenVocabEncoderDecoder's `pretrained` arrives as mmseg's 'Pretrained_Part' (SAN's
        # ViT layout, nothing for this head); other init_cfgs (e.g. 'Pretrained') apply.
        cfgs = [c for c in cfgs if c and c.get('type') != 'Pretrained_Part']
        if cfgs:
            self.init_cfg = cfgs
            super().init_weights()
        else:
            self._zero_last()
        self._is_init = True

    def check_image_encoder(self, image_encoder: nn.Module) -> None:
        """Check that ``image_encoder`` (an ``OpenClipConvNet``) is this head's CLIP tower.

        Another tower's map would go through this CLIP's pooling head and silently land
        outside its joint space.

        Raises:
            ValueError: The towers' weights differ.
        """
        visual = getattr(image_encoder, 'visual', None)
        theirs = {} if visual is None else visual.state_dict()
        ours = self.clip_visual.state_dict()
        same = theirs.keys() == ours.keys() and all(
            theirs[k].shape == v.shape and torch.equal(theirs[k].to(v.dtype), v)
            for k, v in ours.items())
        if not same:
            raise ValueError(f'the decode head\'s CLIP tower is not the image encoder\'s '
                             f'({type(image_encoder).__name__}): give PompDenseCLIPHead the same '
                             'clip_model and pretrained as the OpenClipConvNet image encoder')

    def train(self, mode: bool = True) -> 'PompDenseCLIPHead':
        super().train(mode)
        self.clip_visual.eval()  # frozen, batch norm statistics included
        return self

    def set_num_classes(self, num_classes: int) -> None:
        """Classify ``num_classes`` classes (e.g. after the text encoder's vocabulary changed).

        Clears the loss mask (its ids named the old classes) and resizes a uniform
        ``class_weight``; other weight lists cannot be mapped to new classes and are left for
        :class:`OpenVocabEncoderDecoder`'s loss check to reject.

        Raises:
            ValueError: ``num_classes`` is below 2 (see :func:`_check_num_classes`).
        """
        _check_num_classes(num_classes)
        old, self.num_classes = self.num_classes, num_classes
        self.out_channels = num_classes
        self.loss_excluded_classes = ()
        losses = self.loss_decode
        for loss in losses if isinstance(losses, nn.ModuleList) else [losses]:
            weight = getattr(loss, 'class_weight', None)
            if weight is None or isinstance(weight, str) or len(weight) != old:
                continue
            weight = [float(w) for w in weight]
            if len(set(weight)) == 1:
                loss.class_weight = weight[:1] * num_classes

    def set_loss_excluded_classes(self, class_ids: Iterable[int]) -> None:
        """Class ids (channels of the logits) the loss must never predict."""
        ids = tuple(sorted({int(i) for i in class_ids}))
        bad = [i for i in ids if not 0 <= i < self.num_classes]
        if bad:
            raise ValueError(f'excluded class ids {bad} are outside 0..{self.num_classes - 1}')
        self.loss_excluded_classes = ids

    # ---------------------------------------------------------------- forward
    def _dense_clip(self, fmap: Tensor) -> Tensor:
        dtype = next(self.clip_visual.parameters()).dtype
        with torch.no_grad():  # frozen: no graph through the tower's head
            return dense_embeddings(self.clip_visual, fmap.to(dtype))

    def forward(self, inputs: Sequence[Any]) -> Tensor:
        """Class logits of each map location.

        Args:
            inputs: What ``MultimodalEncoderDecoder`` passes: ``[images, image_features,
                class_embeddings]``, with the image encoder's maps (a tuple; ``in_index``
                picks one, [B, in_channels, h, w]) and one class embedding per class
                [num_classes, embed_dim] (any scale: they are L2-normalised here).

        Returns:
            [B, num_classes, h, w]: temperature times the cosine similarity.

        Raises:
            ValueError: The class embeddings or the map have the wrong shape.
        """
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 3:
            what = (f'{len(inputs)} items' if isinstance(inputs, (list, tuple))
                    else type(inputs).__name__)
            raise ValueError('PompDenseCLIPHead takes [images, image_features, '
                             f'class_embeddings] (as MultimodalEncoderDecoder passes); got {what}')
        _, feats, class_embeds = inputs
        fmap = self._transform_inputs(feats)
        if fmap.dim() != 4 or fmap.shape[1] != self.in_channels:
            raise ValueError(f'the image feature map has shape {tuple(fmap.shape)}, expected '
                             f'[B, {self.in_channels}, h, w] (the CLIP tower\'s last map)')
        rows = self.num_classes
        if class_embeds.dim() != 2 or class_embeds.shape[0] != rows \
                or class_embeds.shape[1] != self.embed_dim:
            hint = (' (a background row? this head needs the text encoder\'s cat_bg=False)'
                    if class_embeds.dim() == 2 and class_embeds.shape[0] == rows + 1 else '')
            raise ValueError(f'class embeddings have shape {tuple(class_embeds.shape)}, expected '
                             f'[num_classes={rows}, embed_dim={self.embed_dim}]{hint}')
        # The head's dtype: the encoders may return float32 whatever the head's weights
        # (OpenClipConvNet and PompTextEncoder do), e.g. after model.half().
        dtype = self.residual[-1].weight.dtype
        x = fmap.to(dtype)
        pixels = F.normalize(self._dense_clip(x).to(dtype) + self.residual(x), dim=1)
        classes = F.normalize(class_embeds.to(dtype), dim=-1)
        scale = self.logit_scale.exp().clamp(max=self.max_logit_scale).to(dtype)
        return scale * torch.einsum('bchw,kc->bkhw', pixels, classes)

    # ---------------------------------------------------------------- loss
    def loss_by_feat(self, seg_logits: Tensor, batch_data_samples: SampleList) -> dict:
        """``BaseDecodeHead.loss_by_feat`` with the excluded classes masked out.

        The logits are resized to the labels first and masked there: bilinear resizing of
        masked columns could round the dtype's minimum to -inf. The parent's own resize to the
        same size is then the identity.
        """
        if self.loss_excluded_classes:
            size = batch_data_samples[0].gt_sem_seg.data.shape[-2:]
            seg_logits = self._mask_excluded(resize(seg_logits, size=size, mode='bilinear',
                                                    align_corners=self.align_corners))
        return super().loss_by_feat(seg_logits, batch_data_samples)

    def _mask_excluded(self, seg_logits: Tensor) -> Tensor:
        if seg_logits.shape[1] != self.num_classes:
            raise ValueError(f'logits have {seg_logits.shape[1]} class channels, expected '
                             f'num_classes={self.num_classes}')
        mask = torch.zeros(self.num_classes, dtype=torch.bool, device=seg_logits.device)
        mask[list(self.loss_excluded_classes)] = True
        # The dtype's minimum, not -inf: softmax gives it exactly 0 without inf - inf NaNs.
        return seg_logits.masked_fill(mask.view(1, -1, 1, 1),
                                      torch.finfo(seg_logits.dtype).min)
