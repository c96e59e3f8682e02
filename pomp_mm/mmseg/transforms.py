"""``IgnoreUnseenClasses`` (mmseg ``TRANSFORMS``): the pixels of unseen classes become the ignore
index, so training sees only the seen classes."""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ..vocabulary import load_vocabulary
from ._classes import _index_of, _names


@TRANSFORMS.register_module()
class IgnoreUnseenClasses(BaseTransform):
    """Set the ground-truth pixels of unseen classes to the ignore index.

    Put it after ``LoadAnnotations`` (and before crops, so ``cat_max_ratio`` sees the ignored
    pixels). Label ids are those of ``classes``, the dataset's class list in label order
    (its ``metainfo['classes']``, after any ``label_map`` mmseg applied while loading); ids of
    seen classes are kept, so training and testing share one label space.

    Required keys: ``gt_seg_map``. Modified keys: ``gt_seg_map``.

    Args:
        classes: The dataset's class names in label order, or the name of a built-in
            vocabulary (``'voc'``) whose ids are those names.
        unseen_classes: Names of the classes to ignore; each must be in ``classes``.
        ignore_index: The value written to unseen pixels.

    Raises:
        ValueError: An unseen class is not in ``classes``, or ``unseen_classes`` is empty.
    """

    def __init__(self,
                 classes: Union[str, Sequence[str]],
                 unseen_classes: Sequence[str],
                 ignore_index: int = 255) -> None:
        if isinstance(classes, str):
            vocab = load_vocabulary(classes)
            keys = (vocab.ids, vocab.names)
        else:
            keys = (_names(classes, 'classes'), )
        unseen = _names(unseen_classes, 'unseen_classes')
        if not unseen:
            raise ValueError('unseen_classes is empty: nothing to ignore')
        self.classes = tuple(keys[0])
        self.unseen_classes = unseen
        self.unseen_ids = np.array(sorted({_index_of(n, keys, 'classes', 'unseen_classes')
                                           for n in unseen}), dtype=np.int64)
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        """Ignore the unseen pixels of ``results['gt_seg_map']``."""
        if 'gt_seg_map' not in results:
            raise KeyError('IgnoreUnseenClasses needs gt_seg_map: put it after LoadAnnotations '
                           'in the pipeline')
        seg = results['gt_seg_map']
        unseen = np.isin(seg, self.unseen_ids)
        if unseen.any():
            seg = seg.copy()  # the loaded map may be shared (e.g. by a dataset cache)
            seg[unseen] = self.ignore_index
            results['gt_seg_map'] = seg
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(unseen_classes={list(self.unseen_classes)}, '
                f'ignore_index={self.ignore_index})')
