"""MMSegmentation adapter for pomp_mm (imports mmseg).

Importing this package registers :class:`OpenVocabIoUMetric` in mmseg's ``METRICS`` registry.
It also registers the open-vocabulary SAN parts, one module per kind as mmseg has them:
``OpenVocabEncoderDecoder`` (:mod:`.segmentors`), ``PompSideAdapterCLIPHead`` (:mod:`.heads`),
``IgnoreUnseenClasses`` (:mod:`.transforms`) and ``VocabularyCheckHook`` (:mod:`.hooks`), in
mmseg's ``MODELS``, ``TRANSFORMS`` and ``HOOKS`` registries. Test fixtures: :mod:`pomp_mm.testing`;
weights in SAN's layout: :mod:`.convert`.
"""
from .._toolkits import require

require('mmseg')  # before any mm import: a missing toolkit is one clear line

from .metric import OpenVocabIoUMetric  # noqa: E402
from .heads import PompSideAdapterCLIPHead  # noqa: E402
from .hooks import VocabularyCheckHook  # noqa: E402
from .segmentors import OpenVocabEncoderDecoder  # noqa: E402
from .transforms import IgnoreUnseenClasses  # noqa: E402

__all__ = ['OpenVocabIoUMetric']
__all__ += [
    'IgnoreUnseenClasses', 'OpenVocabEncoderDecoder', 'PompSideAdapterCLIPHead',
    'VocabularyCheckHook'
]
