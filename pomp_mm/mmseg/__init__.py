"""MMSegmentation adapter for pomp_mm (imports mmseg).

Importing this package registers :class:`OpenVocabIoUMetric` in mmseg's ``METRICS`` registry.
It also registers the open-vocabulary SAN parts, one module per kind as mmseg has them:
``OpenVocabEncoderDecoder`` (:mod:`.segmentors`), ``PompSideAdapterCLIPHead`` (:mod:`.heads`),
``IgnoreUnseenClasses`` (:mod:`.transforms`) and ``VocabularyCheckHook`` (:mod:`.hooks`), in
mmseg's ``MODELS``, ``TRANSFORMS`` and ``HOOKS`` registries. Test fixtures: :mod:`pomp_mm.testing`;
weights in SAN's layout: :mod:`.convert`.
"""
from .metric import OpenVocabIoUMetric
from .heads import PompSideAdapterCLIPHead
from .hooks import VocabularyCheckHook
from .segmentors import OpenVocabEncoderDecoder
from .transforms import IgnoreUnseenClasses

__all__ = ['OpenVocabIoUMetric']
__all__ += [
    'IgnoreUnseenClasses', 'OpenVocabEncoderDecoder', 'PompSideAdapterCLIPHead',
    'VocabularyCheckHook'
]
