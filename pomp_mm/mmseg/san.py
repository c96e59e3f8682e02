"""Open-vocabulary SAN training on seen classes, testing on seen + unseen classes.

Registered in mmseg's registries:

* ``OpenVocabEncoderDecoder`` (``MODELS``): mmseg's ``MultimodalEncoderDecoder`` that keeps the
  unseen classes out of the classifier during training and checks its parts agree;
* ``PompSideAdapterCLIPHead`` (``MODELS``): mmseg's ``SideAdapterCLIPHead`` with an
  ``init_weights`` that works without a pretrained checkpoint, and class masking in the loss;
* ``IgnoreUnseenClasses`` (``TRANSFORMS``): sets the pixels of unseen classes to the ignore index;
* ``VocabularyCheckHook`` (``HOOKS``): checks that each dataset's class list is the model's
  vocabulary, in the same order, before training, validation and testing.
"""
from __future__ import annotations

import difflib
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.transforms import BaseTransform
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.model.weight_init import normal_init
from mmseg.models.decode_heads import SideAdapterCLIPHead
from mmseg.models.segmentors import MultimodalEncoderDecoder
from mmseg.registry import HOOKS, MODELS, TRANSFORMS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor

from ..vocabulary import first_difference, load_vocabulary

#: Overrides that shrink the SAN ViT-B/16 configs to a tiny model with random weights (64-wide
#: 3-layer ViT, 10 queries, 64x64 inputs) for tests and benchmarks; pair it with
#: pomp_mm.clip.TINY_CLIP for the text side.
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

__all__ = [
    'IgnoreUnseenClasses', 'OpenVocabEncoderDecoder', 'PompSideAdapterCLIPHead',
    'VocabularyCheckHook'
]


def _names(value: Union[str, Sequence[str]], arg: str) -> Tuple[str, ...]:
    """A tuple of class names, rejecting a bare string (``'sofa'`` would be 4 letters)."""
    if isinstance(value, str):
        raise TypeError(f'{arg} must be a list of class names, got the string {value!r}; '
                        f'write [{value!r}] for a single class')
    names = tuple(value)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(f'{arg} must hold class names (str), got {bad[0]!r}')
    return names


def _index_of(name: str, keys: Sequence[Sequence[str]], what: str, arg: str) -> int:
    """Index of ``name`` in any of the parallel name lists ``keys`` (ids, display names)."""
    for names in keys:
        if name in names:
            return list(names).index(name)
    close = difflib.get_close_matches(name, [n for names in keys for n in names], n=3)
    hint = f'; did you mean {sorted(set(close))}?' if close else ''
    raise ValueError(f'{arg}: class {name!r} is not in {what} ({len(keys[0])} classes: '
                     f'{", ".join(keys[0][:8])}{", ..." if len(keys[0]) > 8 else ""}){hint}')


# ------------------------------------------------------------------------------- transform
@TRANSFORMS.register_module()
class IgnoreUnseenClasses(BaseTransform):
    """Set the ground-truth pixels of unseen classes to the ignore index.

    Put it after ``LoadAnnotations`` (and before crops, so ``cat_max_ratio`` sees the ignored
    pixels). Label ids are those of ``classes``, the dataset's class list in label order
    (its ``metainfo['classes']``, after any ``label_map`` mmseg applied while loading); ids of
    seen classes are kept, so training and testing share one label space.

    Required keys: ``gt_seg_map``. Modified keys: ``gt_seg_map``.

    Args:
        classes: The dataset's class names in label order, or the name of a built-in
            vocabulary (``'voc'``) whose ids are those names.
        unseen_classes: Names of the classes to ignore; each must be in ``classes``.
        ignore_index: The value written to unseen pixels.

    Raises:
        ValueError: An unseen class is not in ``classes``, or ``unseen_classes`` is empty.
    """

    def __init__(self,
                 classes: Union[str, Sequence[str]],
                 unseen_classes: Sequence[str],
                 ignore_index: int = 255) -> None:
        if isinstance(classes, str):
            vocab = load_vocabulary(classes)
            keys = (vocab.ids, vocab.names)
        else:
            keys = (_names(classes, 'classes'), )
        unseen = _names(unseen_classes, 'unseen_classes')
        if not unseen:
            raise ValueError('unseen_classes is empty: nothing to ignore')
        self.classes = tuple(keys[0])
        self.unseen_classes = unseen
        self.unseen_ids = np.array(sorted({_index_of(n, keys, 'classes', 'unseen_classes')
                                           for n in unseen}), dtype=np.int64)
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        """Ignore the unseen pixels of ``results['gt_seg_map']``."""
        if 'gt_seg_map' not in results:
            raise KeyError('IgnoreUnseenClasses needs gt_seg_map: put it after LoadAnnotations '
                           'in the pipeline')
        seg = results['gt_seg_map']
        unseen = np.isin(seg, self.unseen_ids)
        if unseen.any():
            seg = seg.copy()  # the loaded map may be shared (e.g. by a dataset cache)
            seg[unseen] = self.ignore_index
            results['gt_seg_map'] = seg
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(unseen_classes={list(self.unseen_classes)}, '
                f'ignore_index={self.ignore_index})')


# ------------------------------------------------------------------------------- decode head
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


# ------------------------------------------------------------------------------- segmentor
def _vocabulary_keys(text_encoder) -> Tuple[Tuple[str, ...], ...]:
    """The class-name lists a text encoder embeds, in row order: (ids, display names)."""
    vocab = getattr(text_encoder, 'vocabulary', None)
    if vocab is None:
        raise TypeError(f'{type(text_encoder).__name__} exposes no vocabulary (a list of class '
                        'names); use PompTextEncoder, or give CLIPTextEncoder a vocabulary')
    if hasattr(vocab, 'ids') and hasattr(vocab, 'names'):  # pomp_mm Vocabulary
        return tuple(vocab.ids), tuple(vocab.names)
    names = _names(vocab, 'text_encoder.vocabulary')
    return names, names


@MODELS.register_module()
class OpenVocabEncoderDecoder(MultimodalEncoderDecoder):
    """``MultimodalEncoderDecoder`` trained on seen classes and tested on all classes.

    The text encoder's vocabulary is the full (test) class list, and the decode head has one
    class per vocabulary entry, in training and at test time. During training the
    ``unseen_classes`` are kept out of the classifier: their columns of the class logits are
    masked (zero probability) in the Hungarian matching and in the classification loss. The
    softmax over the remaining columns is exactly that of a head given only the seen names, so
    training is that of a seen-only classifier and the unseen text embeddings receive no
    gradient. At test time nothing is masked and unseen classes are predicted. Unseen pixels
    must be ignored in the training labels (``IgnoreUnseenClasses``); :meth:`loss` raises if
    one reaches it.

    Why masking rather than switching the text encoder to a seen-only vocabulary: one label
    space (the dataset's ids) serves training and testing, so there is no id remapping, no
    head whose ``num_classes`` changes with the mode, and one class order everywhere.

    Args:
        image_encoder: Config of the image encoder (CLIP ViT).
        text_encoder: Config of the text encoder, e.g. ``PompTextEncoder`` with ``cat_bg=True``.
        decode_head: Config of the decode head; ``PompSideAdapterCLIPHead`` when
            ``unseen_classes`` is given.
        unseen_classes: Names (or vocabulary ids) of the classes held out of training.
        pretrained: mmseg-format CLIP checkpoint for the image side (image encoder and the
            head's recognition layers). Unlike the parent, the text encoder gets it only if it
            is mmseg's ``CLIPTextEncoder``: other encoders (PompTextEncoder) load their own
            weights.
        **kwargs: The parent's other arguments (``train_cfg``, ``test_cfg``,
            ``data_preprocessor``, ``asymetric_input``, ``encoder_resolution``, ``init_cfg``).

    Raises:
        ValueError: ``decode_head.num_classes`` is not the vocabulary size; an unseen class is
            not in the vocabulary, or every class is unseen; the text encoder has no
            background row; a classification ``class_weight`` has the wrong length.
        TypeError: ``unseen_classes`` is given but the head cannot mask classes.
    """

    def __init__(self,
                 image_encoder: ConfigType,
                 text_encoder: ConfigType,
                 decode_head: ConfigType,
                 unseen_classes: Optional[Sequence[str]] = None,
                 pretrained: Optional[str] = None,
                 **kwargs) -> None:
        if pretrained is not None:
            # The parent gives all three parts this init_cfg; only mmseg's own modules know the
            # 'Pretrained_Part' type (PompTextEncoder has loaded its weights already).
            part = dict(type='Pretrained_Part', checkpoint=pretrained)
            image_encoder = dict(image_encoder, init_cfg=part)
            decode_head = dict(decode_head, init_cfg=part)
            if text_encoder.get('type') in ('CLIPTextEncoder', 'mmseg.CLIPTextEncoder'):
                text_encoder = dict(text_encoder, init_cfg=part)
        super().__init__(image_encoder, text_encoder, decode_head, pretrained=None, **kwargs)
        self.unseen_classes: Tuple[str, ...] = (
            () if unseen_classes is None else _names(unseen_classes, 'unseen_classes'))
        self.unseen_ids: Tuple[int, ...] = ()
        self._apply_vocabulary()
        self._check_head()

    # ---------------------------------------------------------------- checks
    def _check_head(self) -> None:
        if getattr(self.text_encoder, 'cat_bg', True) is False:
            raise ValueError('the text encoder must have cat_bg=True: SAN reads the last class '
                             'logit as "no object", which would otherwise be a real class')
        expected = self.decode_head.num_classes + 1
        losses = self.decode_head.loss_decode
        for loss in losses if isinstance(losses, torch.nn.ModuleList) else [losses]:
            weight = getattr(loss, 'class_weight', None)
            if 'loss_cls' in getattr(loss, 'loss_name', '') and weight is not None \
                    and len(weight) != expected:
                raise ValueError(f'{loss.loss_name} has {len(weight)} class weights but the head '
                                 f'has num_classes + 1 = {expected} classes (background last); '
                                 f'use class_weight=[1.0] * {expected - 1} + [0.1]')

    def _apply_vocabulary(self) -> None:
        """Check the vocabulary against the head and unseen classes; set the loss mask."""
        keys = _vocabulary_keys(self.text_encoder)
        # The head may add a "no object" channel (one class); slide inference sizes its
        # buffers from ours.
        self.num_classes = self.decode_head.num_classes
        self.out_channels = self.decode_head.out_channels
        if self.decode_head.num_classes != len(keys[0]):
            raise ValueError(
                f'decode_head.num_classes={self.decode_head.num_classes} but the text encoder '
                f'vocabulary has {len(keys[0])} classes ({", ".join(keys[1][:5])}, ...); the head '
                f'classifies against the vocabulary, so set num_classes={len(keys[0])}')
        self.unseen_ids = tuple(sorted({
            _index_of(n, keys, 'the text encoder vocabulary', 'unseen_classes')
            for n in self.unseen_classes}))
        if len(self.unseen_ids) == len(keys[0]):
            raise ValueError(f'every vocabulary class is in unseen_classes '
                             f'({list(self.unseen_classes)}): nothing is left to train on')
        if hasattr(self.decode_head, 'set_loss_excluded_classes'):
            # Always, also to empty: ids of a previous vocabulary must not mask new classes.
            self.decode_head.set_loss_excluded_classes(self.unseen_ids)
        elif self.unseen_ids:
            raise TypeError(f'unseen_classes needs a decode head that can mask classes in '
                            f'its loss, such as PompSideAdapterCLIPHead; got '
                            f'{type(self.decode_head).__name__}')

    @property
    def class_names(self) -> Tuple[str, ...]:
        """Tuple[str]: The classes predicted, in label order (vocabulary ids)."""
        return _vocabulary_keys(self.text_encoder)[0]

    def set_vocabulary(self, vocabulary) -> None:
        """Predict another class list (inference; e.g. a demo's free-text classes).

        Resizes the head's class count to match; unseen classes absent from the new
        vocabulary are dropped from the training mask, which is rebuilt for the new ids. With
        a single class, pixels are that class or "no object" (the ignore index in
        ``pred_sem_seg``).

        Args:
            vocabulary: Anything the text encoder's ``set_vocabulary`` takes.

        Raises:
            ValueError: A single class with a head that has no "no object" output (mmseg's
                own ``SideAdapterCLIPHead``); the model keeps its vocabulary.
        """
        head = self.decode_head
        previous = self.text_encoder.vocabulary
        self.text_encoder.set_vocabulary(vocabulary)
        keys = _vocabulary_keys(self.text_encoder)
        num_classes = len(keys[0])
        if hasattr(head, 'set_num_classes'):
            head.set_num_classes(num_classes)
        elif num_classes < 2:
            self.text_encoder.set_vocabulary(previous)
            raise ValueError(f'a single class ({list(keys[1])}) needs a decode head with a '
                             f'"no object" output, such as PompSideAdapterCLIPHead; '
                             f'{type(head).__name__} would label every pixel with it')
        else:
            head.num_classes = head.out_channels = num_classes
            if getattr(head, 'match_masks', None) is not None:
                head.match_masks.num_classes = num_classes  # its "no object" label
        self.unseen_classes = tuple(n for n in self.unseen_classes
                                    if n in keys[0] or n in keys[1])
        self._apply_vocabulary()

    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: Optional[SampleList] = None) -> SampleList:
        """mmseg's, with the "no object" label of a one-class head set to the ignore index."""
        data_samples = super().postprocess_result(seg_logits, data_samples)
        if self.out_channels == self.num_classes + 1:
            for sample in data_samples:
                pred = sample.pred_sem_seg.data
                pred[pred == self.num_classes] = self.decode_head.ignore_index
        return data_samples

    def _check_labels(self, data_samples: SampleList) -> None:
        """Fail loudly on labels the masked classifier cannot learn (would give inf / index
        errors deep in the loss)."""
        ignore = self.decode_head.ignore_index
        unseen = set(self.unseen_ids)
        for sample in data_samples:
            labels = set(torch.unique(sample.gt_sem_seg.data).tolist()) - {ignore}
            bad = sorted(i for i in labels if not 0 <= i < self.num_classes)
            if bad:
                raise ValueError(f'{sample.metainfo.get("seg_map_path", "a label map")} has '
                                 f'label ids {bad} outside 0..{self.num_classes - 1} (ignore '
                                 f'index {ignore}); does the dataset metainfo list the same '
                                 f'classes as the text encoder vocabulary?')
            seen_unseen = sorted(labels & unseen)
            if seen_unseen:
                names = [self.class_names[i] for i in seen_unseen]
                raise ValueError(f'unseen classes {names} appear in the training labels of '
                                 f'{sample.metainfo.get("seg_map_path", "a sample")}; add '
                                 f'IgnoreUnseenClasses to the train pipeline')

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """The parent's loss, after checking the head (its class weights may predate a
        :meth:`set_vocabulary`) and that the labels hold no unseen or unknown class."""
        self._check_head()
        self._check_labels(data_samples)
        return super().loss(inputs, data_samples)


# ------------------------------------------------------------------------------- hook
@HOOKS.register_module()
class VocabularyCheckHook(Hook):
    """Check each dataset's ``metainfo['classes']`` against the model's vocabulary.

    Label ids index the text encoder's vocabulary, so the two lists must be equal, in order;
    a mismatch (a ``'background'`` entry, a different order) trains or scores the wrong
    classes silently. Runs before training, validation and testing.
    """

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        self._check(runner, runner.train_dataloader, 'train')

    def before_val(self, runner) -> None:
        self._check(runner, runner.val_loop.dataloader, 'val')

    def before_test(self, runner) -> None:
        self._check(runner, runner.test_loop.dataloader, 'test')

    @staticmethod
    def _check(runner, dataloader, split: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        classes = getattr(dataloader.dataset, 'metainfo', {}).get('classes')
        if classes is None or not hasattr(model, 'text_encoder'):
            return
        keys = _vocabulary_keys(model.text_encoder)
        classes = tuple(classes)
        if classes not in keys:
            diff = first_difference(classes, keys[0])
            raise ValueError(
                f'the {split} dataset classes ({len(classes)}) differ from the text encoder '
                f'vocabulary ({len(keys[0])}) at index {diff}: '
                f'{classes[diff] if diff < len(classes) else "(end)"!r} vs '
                f'{keys[0][diff] if diff < len(keys[0]) else "(end)"!r}; set the dataset '
                f'metainfo=dict(classes=...) to the vocabulary, in the same order')
