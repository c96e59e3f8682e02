"""MMDetection adapter for pomp_mm (imports mmdet).

Importing this package registers, in mmdet's registries: :class:`ZeroShotClassifier`,
:class:`PompBBoxHead`, :class:`OpenClipViT` (a frozen CLIP ViT backbone),
:class:`ClipRoIExtractor` and :class:`ClipPoolRoIExtractor` (RoIs as CLIP image embeddings of a
ViT or a CNN tower) and
:class:`FederatedSigmoidLoss` (``MODELS``), :class:`OpenVocabCocoDataset` and
:class:`OpenVocabLVISV1Dataset` (``DATASETS``), :class:`DetVocabularyCheckHook` (``HOOKS``).
It also lets mmdet's ``LVISMetric`` run under numpy >= 1.24 (see :mod:`pomp_mm.mmdet.lvis_compat`).
"""
from .._toolkits import require

require('mmdet')  # before any mm import: a missing toolkit is one clear line

from .backbones import OpenClipViT  # noqa: E402
from .classifier import (PompBBoxHead, ZeroShotClassifier, check_mask_heads,  # noqa: E402
                         set_detector_vocabulary)
from .datasets import OpenVocabCocoDataset, OpenVocabLVISV1Dataset  # noqa: E402
from .hooks import DetVocabularyCheckHook  # noqa: E402
from .loss import FederatedSigmoidLoss, lvis_class_frequencies  # noqa: E402
from .lvis_compat import patch_lvis_eval  # noqa: E402
from .roi_extractors import ClipPoolRoIExtractor, ClipRoIExtractor  # noqa: E402
from ..conv_clip import OpenClipConvNet  # noqa: E402,F401  (root MODELS: the CNN backbone)

patch_lvis_eval()

__all__ = [
    'ClipPoolRoIExtractor', 'ClipRoIExtractor', 'DetVocabularyCheckHook', 'FederatedSigmoidLoss',
    'OpenClipConvNet', 'OpenClipViT',
    'check_mask_heads', 'OpenVocabCocoDataset', 'OpenVocabLVISV1Dataset', 'PompBBoxHead',
    'ZeroShotClassifier', 'lvis_class_frequencies', 'patch_lvis_eval', 'set_detector_vocabulary'
]
