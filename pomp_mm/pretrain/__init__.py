"""POMP prompt pre-training: class sampling, the local-correction loss, datasets, the
pre-training model and its hooks (registered in mmengine's root registries).

Nothing here imports MMDetection, MMSegmentation or MMCV.
"""
from .data import ImageList, ImageNet21K, build_transform, collate_views, few_shot_split
from .feature_cache import CachedFeatures, build_feature_cache, collate_features
from .hooks import PreemptionHook, PromptCheckpointHook
from .loss import (CORRECTIONS, correction_margin, local_contrast_logits,
                   per_image_logits, pomp_loss)
from .model import PompPretrainer
from .randaugment import DasslRandAugment
from .sampling import SAMPLING_MODES, NegativeSampler

__all__ = [
    'CORRECTIONS', 'SAMPLING_MODES', 'CachedFeatures', 'DasslRandAugment', 'ImageList',
    'ImageNet21K', 'NegativeSampler', 'PompPretrainer', 'PreemptionHook', 'PromptCheckpointHook',
    'build_feature_cache', 'build_transform', 'collate_features', 'collate_views',
    'correction_margin', 'few_shot_split', 'local_contrast_logits', 'per_image_logits',
    'pomp_loss'
]
