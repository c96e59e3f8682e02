"""POMP prompt pre-training pieces: class sampling and the local-correction loss.

Pure torch; nothing here imports MMDetection, MMSegmentation or MMCV.
"""
from .loss import CORRECTIONS, PompLoss, correction_margin, local_contrast_logits, pomp_loss
from .sampling import SAMPLING_MODES, NegativeSampler

__all__ = [
    'CORRECTIONS', 'SAMPLING_MODES', 'NegativeSampler', 'PompLoss', 'correction_margin',
    'local_contrast_logits', 'pomp_loss'
]
