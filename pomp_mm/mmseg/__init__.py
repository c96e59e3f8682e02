"""MMSegmentation adapter for pomp_mm (imports mmseg).

Importing this package registers :class:`OpenVocabIoUMetric` in mmseg's ``METRICS`` registry.
It also registers the open-vocabulary SAN parts of :mod:`pomp_mm.mmseg.san`
(``OpenVocabEncoderDecoder``, ``PompSideAdapterCLIPHead``, ``IgnoreUnseenClasses``,
``VocabularyCheckHook``) in mmseg's ``MODELS``, ``TRANSFORMS`` and ``HOOKS`` registries.
"""
from .metric import OpenVocabIoUMetric
from .san import (IgnoreUnseenClasses, OpenVocabEncoderDecoder, PompSideAdapterCLIPHead,
                  VocabularyCheckHook)

__all__ = ['OpenVocabIoUMetric']
__all__ += [
    'IgnoreUnseenClasses', 'OpenVocabEncoderDecoder', 'PompSideAdapterCLIPHead',
    'VocabularyCheckHook'
]
