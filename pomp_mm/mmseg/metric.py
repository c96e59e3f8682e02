"""Open-vocabulary IoU metric: mmseg's mIoU plus seen / unseen mIoU and their harmonic mean."""
from __future__ import annotations

import difflib
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS
from prettytable import PrettyTable

__all__ = ['OpenVocabIoUMetric']


def _as_names(names: Optional[Sequence[str]], arg: str) -> Optional[Tuple[str, ...]]:
    """Normalise a class-name argument, rejecting a bare string (a common config slip)."""
    if names is None:
        return None
    if isinstance(names, str):
        raise TypeError(f'{arg} must be a list of class names, got the string {names!r}; '
                        f'write [{names!r}] for a single class')
    names = tuple(names)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f'{arg} must hold class names (str), got {name!r}')
    # Order-preserving dedupe: a repeated name is harmless and should not count twice.
    return tuple(dict.fromkeys(names))


def _nanmean(values: np.ndarray) -> float:
    """Mean ignoring NaN; NaN (without numpy's warning) when every value is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=RuntimeWarning)
        return float(np.nanmean(values)) if len(values) else float('nan')


@METRICS.register_module()
class OpenVocabIoUMetric(IoUMetric):
    """:class:`~mmseg.evaluation.metrics.IoUMetric` with a seen / unseen class split.

    Accumulation and the standard keys (``aAcc``, ``mIoU``, ``mAcc``, ...) and per-class table
    are the parent's, unchanged. Added keys, in percent and rounded to 2 decimals like ``mIoU``:

    * ``mIoU-seen`` / ``mIoU-unseen``: mean IoU over the seen / unseen classes;
    * ``hIoU``: their harmonic mean ``2 * s * u / (s + u)`` (0 when ``s + u == 0``), computed
      from the unrounded means.

    Like mmseg's ``mIoU``, the means use ``np.nanmean``: a class absent from both prediction
    and ground truth (ignored pixels excluded) has IoU 0/0 = NaN and is left out of every mean
    instead of counting as 0. A split whose classes are all NaN gets NaN, and so does ``hIoU``
    then; ``nan_to_num`` (applied per class, as in the parent) turns them into numbers.

    Args:
        seen_classes: Names of the classes seen in training.
        unseen_classes: Names of the classes not seen in training. Give at least one of the
            two; a missing one is the complement within ``dataset_meta['classes']``. When both
            are given they must be disjoint; classes in neither count in ``mIoU`` only.
        **kwargs: Everything :class:`IoUMetric` takes (``ignore_index``, ``iou_metrics``,
            ``nan_to_num``, ``beta``, ``collect_device``, ``output_dir``, ``format_only``,
            ``prefix``).

    Raises:
        ValueError: No split given, the splits overlap, or (once ``dataset_meta`` is set) a
            name is not in ``dataset_meta['classes']`` or a split comes out empty.
    """

    def __init__(self,
                 seen_classes: Optional[Sequence[str]] = None,
                 unseen_classes: Optional[Sequence[str]] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen_classes = _as_names(seen_classes, 'seen_classes')
        self.unseen_classes = _as_names(unseen_classes, 'unseen_classes')
        if self.seen_classes is None and self.unseen_classes is None:
            raise ValueError('OpenVocabIoUMetric needs seen_classes or unseen_classes '
                             '(the other defaults to the remaining dataset classes)')
        if self.seen_classes is not None and self.unseen_classes is not None:
            both = [c for c in self.seen_classes if c in set(self.unseen_classes)]
            if both:
                raise ValueError(f'classes {both} are in both seen_classes and unseen_classes')

    # Re-declared only to validate the split as soon as the runner hands over the dataset
    # meta, so a misspelt class fails before the test loop rather than after it.
    @property
    def dataset_meta(self) -> Optional[dict]:
        """Optional[dict]: Meta info of the dataset; setting it validates the class split."""
        return BaseMetric.dataset_meta.fget(self)

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: Optional[dict]) -> None:
        if dataset_meta is not None and 'classes' in dataset_meta:
            self.split_indices(dataset_meta['classes'])
        BaseMetric.dataset_meta.fset(self, dataset_meta)

    def split_indices(self, classes: Sequence[str]) -> Tuple[List[int], List[int]]:
        """Resolve the seen / unseen class names to indices into ``classes``.

        Args:
            classes: The dataset's class names, in label order.

        Returns:
            The seen and the unseen class indices, each in label order.

        Raises:
            ValueError: A name is not in ``classes``, or a split is empty.
        """
        classes = tuple(classes)
        known = set(classes)
        for arg, names in (('seen_classes', self.seen_classes),
                           ('unseen_classes', self.unseen_classes)):
            for name in names or ():
                if name not in known:
                    close = difflib.get_close_matches(name, classes, n=3)
                    hint = f'; did you mean {close}?' if close else ''
                    raise ValueError(f'{arg}: class {name!r} is not in dataset_meta["classes"] '
                                     f'({len(classes)} classes){hint}')
        seen = set(self.seen_classes) if self.seen_classes is not None else None
        unseen = set(self.unseen_classes) if self.unseen_classes is not None else None
        if seen is None:
            seen = known - unseen
        if unseen is None:
            unseen = known - seen
        seen_idx = [i for i, c in enumerate(classes) if c in seen]
        unseen_idx = [i for i, c in enumerate(classes) if c in unseen]
        for split, idx in (('seen', seen_idx), ('unseen', unseen_idx)):
            if not idx:
                raise ValueError(f'the {split} split is empty among the {len(classes)} dataset '
                                 f'classes: hIoU needs both seen and unseen classes')
        return seen_idx, unseen_idx

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Compute the parent's metrics plus ``mIoU-seen``, ``mIoU-unseen`` and ``hIoU``.

        Args:
            results: The per-image ``intersect_and_union`` tuples collected by ``process``.

        Returns:
            The metrics, in percent (``aAcc``, ``mIoU``, ... and the three added keys).
        """
        if self.format_only:
            return super().compute_metrics(results)
        seen_idx, unseen_idx = self.split_indices(self.dataset_meta['classes'])
        metrics = super().compute_metrics(results)

        # The parent returns only means, so redo its (cheap, per-class) area sums to get the
        # per-class IoU; always ask for 'mIoU' so the split works whatever iou_metrics says.
        areas = [sum(area) for area in zip(*results)]
        iou = self.total_area_to_metrics(*areas, ['mIoU'], self.nan_to_num, self.beta)['IoU']
        seen, unseen = _nanmean(iou[seen_idx]), _nanmean(iou[unseen_idx])
        hiou = 2 * seen * unseen / (seen + unseen) if seen + unseen != 0 else 0.0
        metrics['mIoU-seen'] = np.round(seen * 100, 2)
        metrics['mIoU-unseen'] = np.round(unseen * 100, 2)
        metrics['hIoU'] = np.round(hiou * 100, 2)

        table = PrettyTable()
        table.add_column('Split', ['seen', 'unseen', 'harmonic'])
        table.add_column('Classes', [len(seen_idx), len(unseen_idx), '-'])
        table.add_column('Evaluated', [int(np.count_nonzero(~np.isnan(iou[seen_idx]))),
                                       int(np.count_nonzero(~np.isnan(iou[unseen_idx]))), '-'])
        table.add_column('mIoU', [metrics['mIoU-seen'], metrics['mIoU-unseen'], metrics['hIoU']])
        logger: MMLogger = MMLogger.get_current_instance()
        print_log('open-vocabulary split results (NaN-IoU classes not evaluated):', logger)
        print_log('\n' + table.get_string(), logger=logger)
        return metrics
