"""A runner hook that keeps datasets, checkpoints and the zero-shot head's vocabularies in step."""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from ..vocabulary import clean_name, first_difference
from .classifier import check_mask_heads, zero_shot_classifiers

__all__ = ['DetVocabularyCheckHook']


def _leaf_datasets(dataset: Any) -> Iterator[Any]:
    """The datasets under mmengine's wrappers (ClassBalanced / Repeat / Concat)."""
    if hasattr(dataset, 'datasets'):
        for sub in dataset.datasets:
            yield from _leaf_datasets(sub)
    elif hasattr(dataset, 'dataset'):
        yield from _leaf_datasets(dataset.dataset)
    else:
        yield dataset


def _label_names(dataset: Any, split: str) -> Optional[List[str]]:
    """The names of ``dataset``'s labels ``0..C-1``: the annotation file's names when the
    dataset kept them (``OpenVocab*Dataset``), else ``metainfo['classes']``."""
    classes = getattr(dataset, 'metainfo', {}).get('classes')
    if classes is None:
        return None
    names = getattr(dataset, 'label_names', None)
    if names is not None:
        return list(names)
    cat_ids = getattr(dataset, 'cat_ids', None)
    if cat_ids is not None and len(cat_ids) != len(classes):
        # mmdet's CocoDataset numbers only the classes it finds in the file, in file order
        raise ValueError(f'the {split} dataset lists {len(classes)} classes but its annotation '
                         f'file {getattr(dataset, "ann_file", "?")!r} has only {len(cat_ids)} '
                         'of them; every label after a missing one would shift')
    return list(classes)


@HOOKS.register_module()
class DetVocabularyCheckHook(Hook):
    """Keep the detector's vocabularies consistent with its datasets and checkpoints.

    * Each dataset's labels must name the head's train vocabulary (training) or test
      vocabulary (evaluation), in order: compared after the same name cleaning (e.g.
      ``'aerosol_can'`` = ``'aerosol can'``) against the annotation file's label names where
      the dataset kept them; a mismatch would train or score the wrong classes silently. A
      ``.npy`` without class names is checked by length only.
    * A per-class mask head is refused (its channels are the train classes).
    * Checkpoints name the classes the model predicts: the Runner stores the train dataset's
      metainfo as ``meta['dataset_meta']``, which mmdet's ``init_detector`` / ``DetInferencer``
      then use to name test-vocabulary labels. The hook writes the test vocabulary there and
      keeps the train metainfo as ``meta['train_dataset_meta']`` (restored on resume).
    """

    priority = 'VERY_LOW'

    def before_run(self, runner) -> None:
        check_mask_heads(self._model(runner))

    def before_train(self, runner) -> None:
        self._check(runner, runner.train_dataloader, 'train', training=True)

    def before_val(self, runner) -> None:
        self._check(runner, runner.val_loop.dataloader, 'val', training=False)

    def before_test(self, runner) -> None:
        self._check(runner, runner.test_loop.dataloader, 'test', training=False)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        heads = zero_shot_classifiers(self._model(runner))
        if not heads:
            return
        meta = checkpoint.setdefault('meta', {})
        train_meta = meta.get('dataset_meta')
        meta['train_dataset_meta'] = train_meta
        meta['dataset_meta'] = self._test_meta(runner, heads[0], train_meta or {})

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta', {})
        if 'train_dataset_meta' in meta:  # resuming compares it with the train dataset's
            meta['dataset_meta'] = meta.pop('train_dataset_meta')

    @staticmethod
    def _model(runner) -> nn.Module:
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    @staticmethod
    def _test_meta(runner, head, train_meta: Dict[str, Any]) -> Dict[str, Any]:
        """The metainfo naming the head's test-vocabulary labels."""
        size, names = head.vocabulary_for(False)
        val_loop = getattr(runner, 'val_loop', None)  # built before training starts
        val_meta = None if val_loop is None else getattr(val_loop.dataloader.dataset,
                                                         'metainfo', None)
        if val_meta is not None and len(val_meta.get('classes') or ()) == size and (
                names is None or [clean_name(c).lower() for c in val_meta['classes']]
                == [clean_name(n).lower() for n in names]):
            return dict(val_meta)
        meta = {k: v for k, v in train_meta.items() if k not in ('classes', 'palette')}
        palette = train_meta.get('palette')
        if not isinstance(palette, (list, tuple)) or len(palette) >= size:
            meta['palette'] = palette  # mmdet's get_palette needs a colour per class
        meta['classes'] = tuple(names or (f'class {i}' for i in range(size)))
        return {k: v for k, v in meta.items() if v is not None}

    @classmethod
    def _check(cls, runner, dataloader, split: str, training: bool) -> None:
        model = cls._model(runner)
        check_mask_heads(model)
        heads = zero_shot_classifiers(model)
        if not heads:
            return
        kind = 'vocabulary' if training else 'test_vocabulary'
        for dataset in _leaf_datasets(dataloader.dataset):
            classes = _label_names(dataset, split)
            if classes is None:
                continue
            classes = [clean_name(c) for c in classes]
            for head in heads:
                size, names = head.vocabulary_for(training)
                if size != len(classes):
                    raise ValueError(f'the {split} dataset has {len(classes)} classes but the '
                                     f'detector head\'s {kind} has {size}; they must be the '
                                     'same list, in the same order')
                if names is None:
                    continue
                bad = first_difference([c.lower() for c in classes],
                                       [n.lower() for n in names])
                if bad is not None:
                    raise ValueError(f'the {split} dataset classes differ from the detector '
                                     f"head's {kind} at index {bad}: {classes[bad]!r} vs "
                                     f'{names[bad]!r}; list them in the same order')
