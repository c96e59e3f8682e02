"""MMDetection adapter for pomp_mm (imports mmdet).

Importing this package registers, in mmdet's registries: :class:`ZeroShotClassifier`,
:class:`PompBBoxHead`, :class:`OpenClipViT` (a frozen CLIP backbone),
:class:`ClipRoIExtractor` (RoIs as CLIP image embeddings) and
:class:`FederatedSigmoidLoss` (``MODELS``), :class:`OpenVocabCocoDataset` and
:class:`OpenVocabLVISV1Dataset` (``DATASETS``), :class:`DetVocabularyCheckHook` (``HOOKS``).
It also lets mmdet's ``LVISMetric`` run under numpy >= 1.24 (see :mod:`pomp_mm.mmdet.lvis_compat`).
"""
from .backbones import OpenClipViT
from .classifier import (PompBBoxHead, ZeroShotClassifier, check_mask_heads,
                         set_detector_vocabulary)
from .datasets import OpenVocabCocoDataset, OpenVocabLVISV1Dataset
from .hooks import DetVocabularyCheckHook
from .loss import FederatedSigmoidLoss, lvis_class_frequencies
from .lvis_compat import patch_lvis_eval
from .roi_extractors import ClipRoIExtractor

patch_lvis_eval()

__all__ = [
    'ClipRoIExtractor', 'DetVocabularyCheckHook', 'FederatedSigmoidLoss', 'OpenClipViT',
    'check_mask_heads', 'OpenVocabCocoDataset', 'OpenVocabLVISV1Dataset', 'PompBBoxHead',
    'ZeroShotClassifier', 'lvis_class_frequencies', 'patch_lvis_eval', 'set_detector_vocabulary'
]
