"""``OpenVocabEncoderDecoder`` (mmseg ``MODELS``): mmseg's ``MultimodalEncoderDecoder`` that keeps
the unseen classes out of the classifier during training and checks that its parts agree."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from mmseg.models.segmentors import MultimodalEncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor

from ._classes import _index_of, _names, _vocabulary_keys


@MODELS.register_module()
class OpenVocabEncoderDecoder(MultimodalEncoderDecoder):
    """``MultimodalEncoderDecoder`` trained on seen classes and tested on all classes.

    The text encoder's vocabulary is the full (test) class list, and the decode head has one
    class per vocabulary entry, in training and at test time. During training the
    ``unseen_classes`` are kept out of the classifier: their columns of the class logits are
    masked (zero probability) in the head's loss (SAN's: also in the Hungarian matching). The
    softmax over the remaining columns is exactly that of a head given only the seen names, so
    training is that of a seen-only classifier and the unseen text embeddings receive no
    gradient. At test time nothing is masked and unseen classes are predicted. Unseen pixels
    must be ignored in the training labels (``IgnoreUnseenClasses``); :meth:`loss` raises if
    one reaches it.

    Why masking rather than switching the text encoder to a seen-only vocabulary: one label
    space (the dataset's ids) serves training and testing, so there is no id remapping, no
    head whose ``num_classes`` changes with the mode, and one class order everywhere.

    Args:
        image_encoder: Config of the image encoder: a CLIP ViT for SAN, ``OpenClipConvNet``
            (a convolutional CLIP) for ``PompDenseCLIPHead``.
        text_encoder: Config of the text encoder, e.g. ``PompTextEncoder``; ``cat_bg`` as the
            head needs (``needs_background_row``: True for SAN heads, False for
            ``PompDenseCLIPHead``).
        decode_head: Config of the decode head; with ``unseen_classes``, one that can mask
            classes in its loss (``PompSideAdapterCLIPHead``, ``PompDenseCLIPHead``).
        unseen_classes: Names (or vocabulary ids) of the classes held out of training.
        pretrained: mmseg-format CLIP checkpoint for the image side (image encoder and the
            head's recognition layers). Unlike the parent, the text encoder gets it only if it
            is mmseg's ``CLIPTextEncoder``: other encoders (PompTextEncoder) load their own
            weights.
        **kwargs: The parent's other arguments (``train_cfg``, ``test_cfg``,
            ``data_preprocessor``, ``asymetric_input``, ``encoder_resolution``, ``init_cfg``).

    Raises:
        ValueError: ``decode_head.num_classes`` is not the vocabulary size; an unseen class is
            not in the vocabulary, or every class is unseen; the text encoder's ``cat_bg``
            does not fit the head; a classification ``class_weight`` has the wrong length; the
            head's ``check_image_encoder`` refuses the image encoder.
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
        if hasattr(self.decode_head, 'check_image_encoder'):  # heads reading the encoder's map
            self.decode_head.check_image_encoder(self.image_encoder)

    # ---------------------------------------------------------------- checks
    def _check_head(self) -> None:
        head = self.decode_head
        # Heads that do not say are SAN-like (mmseg's SideAdapterCLIPHead): background row.
        background = getattr(head, 'needs_background_row', True)
        if background and getattr(self.text_encoder, 'cat_bg', True) is False:
            raise ValueError('the text encoder must have cat_bg=True: SAN reads the last class '
                             'logit as "no object", which would otherwise be a real class')
        if not background and getattr(self.text_encoder, 'cat_bg', False) is True:
            raise ValueError(f'{type(head).__name__} scores one text row per class and has no '
                             '"no object" output: the text encoder must have cat_bg=False (its '
                             'background row would be scored as one more class)')
        expected = head.num_classes + int(background)
        losses = head.loss_decode
        for loss in losses if isinstance(losses, torch.nn.ModuleList) else [losses]:
            weight = getattr(loss, 'class_weight', None)
            if weight is None or isinstance(weight, str) or len(weight) == expected:
                continue
            name = getattr(loss, 'loss_name', type(loss).__name__)
            if background and 'loss_cls' in name:  # SAN's mask losses have no classes
                raise ValueError(f'{name} has {len(weight)} class weights but the head '
                                 f'has num_classes + 1 = {expected} classes (background last); '
                                 f'use class_weight=[1.0] * {expected - 1} + [0.1]')
            if not background:  # per-pixel losses over the class channels
                raise ValueError(f'{name} has {len(weight)} class weights but the head has '
                                 f'num_classes = {expected} classes (no background)')

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
                own ``SideAdapterCLIPHead``, ``PompDenseCLIPHead``); the model keeps its
                vocabulary.
        """
        head = self.decode_head
        previous = self.text_encoder.vocabulary
        self.text_encoder.set_vocabulary(vocabulary)
        keys = _vocabulary_keys(self.text_encoder)
        num_classes = len(keys[0])
        if hasattr(head, 'set_num_classes'):
            try:
                head.set_num_classes(num_classes)
            except ValueError:  # e.g. one class for a head without "no object"
                self.text_encoder.set_vocabulary(previous)
                raise
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
