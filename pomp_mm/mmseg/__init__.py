"""MMSegmentation adapter for pomp_mm (imports mmseg).

Importing this package registers :class:`OpenVocabIoUMetric` in mmseg's ``METRICS`` registry.
It also registers the open-vocabulary parts, one module per kind as mmseg has them:
``OpenVocabEncoderDecoder`` (:mod:`.segmentors`), ``PompSideAdapterCLIPHead`` (SAN, CLIP ViT)
and ``PompDenseCLIPHead`` (convolutional CLIP; :mod:`.heads`), ``IgnoreUnseenClasses``
(:mod:`.transforms`) and ``VocabularyCheckHook`` (:mod:`.hooks`), in mmseg's ``MODELS``,
``TRANSFORMS`` and ``HOOKS`` registries; and ``OpenClipConvNet``, the CNN CLIP image encoder
(:mod:`pomp_mm.conv_clip`, root ``MODELS``). Test fixtures: :mod:`pomp_mm.testing`; weights in
SAN's layout: :mod:`.convert`.
"""
from .._toolkits import require

require('mmseg')  # before any mm import: a missing toolkit is one clear line

from ..conv_clip import OpenClipConvNet  # noqa: E402,F401  (root MODELS: the CNN image encoder)
from .metric import OpenVocabIoUMetric  # noqa: E402
from .heads import PompDenseCLIPHead, PompSideAdapterCLIPHead  # noqa: E402
from .hooks import VocabularyCheckHook  # noqa: E402
from .segmentors import OpenVocabEncoderDecoder  # noqa: E402
from .transforms import IgnoreUnseenClasses  # noqa: E402

__all__ = ['OpenVocabIoUMetric']
__all__ += [
    'IgnoreUnseenClasses', 'OpenVocabEncoderDecoder', 'PompDenseCLIPHead',
    'PompSideAdapterCLIPHead', 'VocabularyCheckHook'
]
