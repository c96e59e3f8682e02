"""MMSegmentation adapter for pomp_mm (imports mmseg).

Importing this package registers :class:`OpenVocabIoUMetric` in mmseg's ``METRICS`` registry.
"""
from .metric import OpenVocabIoUMetric

__all__ = ['OpenVocabIoUMetric']
