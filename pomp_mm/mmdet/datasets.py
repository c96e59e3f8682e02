"""Open-vocabulary training sets: COCO / LVIS with the annotations of held-out classes removed.

OV-COCO trains on 48 base classes and OV-LVIS on frequent + common classes; the novel / rare
annotations must not reach the detector. Both datasets drop them while loading (and log how
many), so the standard full annotation files can be used directly.

mmdet numbers the labels in the annotation file's category order (over the categories it finds
by name), whatever order ``metainfo['classes']`` lists them in; both datasets therefore check
that the two agree and keep the file's names as ``label_names``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence

from mmdet.datasets import CocoDataset, LVISV1Dataset
from mmdet.registry import DATASETS
from mmengine.logging import print_log

from ..vocabulary import clean_name, first_difference

__all__ = ['OpenVocabCocoDataset', 'OpenVocabLVISV1Dataset']


class _DropAnnotationsMixin:
    """Drops annotations whose category fails ``_keep_category`` before mmdet parses them, and
    checks the file's label order against ``metainfo['classes']``.

    Attributes:
        label_names: The annotation file's names of the labels ``0..C-1`` (its category order),
            set while loading; None before, or when the file has no images.
    """

    _dropped: int = 0
    _api_name: str = ''  # the attribute holding the annotation API while mmdet loads
    label_names: Optional[List[str]] = None

    def _keep_category(self, category_id: int) -> bool:
        raise NotImplementedError

    def _record_label_names(self) -> None:
        """Keep the file's names of ``self.cat_ids`` and refuse a ``metainfo['classes']`` that
        does not list them in the same order (mmdet would label by the file's order)."""
        cats = getattr(self, self._api_name).cats
        names = [cats[i].get('name', str(i)) for i in self.cat_ids]
        classes = list(self.metainfo['classes'])
        found = {clean_name(n).lower() for n in names}
        missing = [(i, c) for i, c in enumerate(classes) if clean_name(c).lower() not in found]
        if missing:
            i, name = missing[0]
            raise ValueError(
                f"metainfo['classes'][{i}] = {name!r} is not a category of {self.ann_file!r} "
                f'({len(missing)} such classes); every later label would shift')
        bad = first_difference([clean_name(c).lower() for c in classes],
                               [clean_name(n).lower() for n in names])
        if bad is not None:
            ours = classes[bad] if bad < len(classes) else '<none>'
            theirs = names[bad] if bad < len(names) else '<none>'
            raise ValueError(
                f"metainfo['classes'] ({len(classes)} classes) and the categories of "
                f'{self.ann_file!r} ({len(names)}, in the file\'s order, which sets the labels) '
                f'differ at index {bad}: {ours!r} vs {theirs!r}; list the classes in the '
                "file's category order")
        self.label_names = names

    def parse_data_info(self, raw_data_info: Dict[str, Any]):
        if self.label_names is None:  # the annotation API exists only while mmdet loads
            self._record_label_names()
        anns = raw_data_info['raw_ann_info']
        kept = [a for a in anns if self._keep_category(a['category_id'])]
        self._dropped += len(anns) - len(kept)
        return super().parse_data_info(dict(raw_data_info, raw_ann_info=kept))

    def _load_and_report(self, load: Callable[[], List[dict]], what: str) -> List[dict]:
        self._dropped = 0
        self.label_names = None
        data_list = load()
        print_log(f'{type(self).__name__}: dropped {self._dropped} annotations of {what} '
                  f'from {self.ann_file}', logger='current', level=logging.INFO)
        return data_list


@DATASETS.register_module()
class OpenVocabCocoDataset(_DropAnnotationsMixin, CocoDataset):
    """``CocoDataset`` that keeps only the annotations of ``metainfo['classes']``.

    mmdet's ``CocoDataset`` fails on an annotation whose category is not among its classes;
    this one drops it, so OV-COCO can train on the 48 base classes from the full
    ``instances_train2017.json`` as well as from the usual ``*_seen_2.json`` files.
    ``metainfo['classes']`` must list the file's categories in the file's order (mmdet labels
    by that order); a class missing from the file or out of order is an error.
    """

    _api_name = 'coco'

    def _keep_category(self, category_id: int) -> bool:
        return category_id in self.cat2label

    def load_data_list(self) -> List[dict]:
        return self._load_and_report(super().load_data_list, 'classes outside metainfo')


@DATASETS.register_module()
class OpenVocabLVISV1Dataset(_DropAnnotationsMixin, LVISV1Dataset):
    """``LVISV1Dataset`` without the annotations of some frequency groups.

    The label space stays all 1,203 classes; OV-LVIS removes the rare (``'r'``) annotations,
    leaving the 866 frequent + common classes to train on (Detic's ``lvis_v1_train_norare``).
    Labels follow the file's category order; ``metainfo['classes']`` must name the same
    categories in that order (compared after name cleaning).

    Args:
        exclude_frequencies: LVIS frequency groups (``'r'``, ``'c'``, ``'f'``) whose
            annotations are removed.
        **kwargs: ``LVISV1Dataset`` arguments.
    """

    _api_name = 'lvis'

    def __init__(self, *args: Any, exclude_frequencies: Sequence[str] = ('r',), **kwargs: Any):
        bad = [f for f in exclude_frequencies if f not in ('r', 'c', 'f')]
        if bad:
            raise ValueError(f"exclude_frequencies must hold 'r', 'c' or 'f'; got {bad}")
        self.exclude_frequencies = tuple(exclude_frequencies)
        super().__init__(*args, **kwargs)

    def _keep_category(self, category_id: int) -> bool:
        return category_id not in self._excluded_ids

    def load_data_list(self) -> List[dict]:
        def load() -> List[dict]:
            self._excluded_ids = set()
            self._checked = False
            return LVISV1Dataset.load_data_list(self)
        return self._load_and_report(load, f'frequencies {list(self.exclude_frequencies)}')

    def parse_data_info(self, raw_data_info: Dict[str, Any]):
        if not self._checked:  # self.lvis exists only while LVISV1Dataset loads
            cats = self.lvis.cats.values()
            no_freq = [c.get('name', c['id']) for c in cats if 'frequency' not in c]
            if no_freq:
                raise ValueError(f'{self.ann_file!r}: categories without an LVIS frequency '
                                 f'field, e.g. {no_freq[:3]}; is it an LVIS v1 file?')
            self._excluded_ids = {c['id'] for c in cats
                                  if c['frequency'] in self.exclude_frequencies}
            for cat_id in self._excluded_ids:  # images with only excluded classes count as empty
                self.cat_img_map[cat_id] = []
            self._checked = True
        return super().parse_data_info(raw_data_info)
