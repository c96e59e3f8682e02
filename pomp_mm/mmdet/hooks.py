"""A runner hook that checks dataset classes against the zero-shot head's vocabularies."""
from __future__ import annotations

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..vocabulary import clean_name, first_difference
from .classifier import zero_shot_classifiers

__all__ = ['DetVocabularyCheckHook']


@HOOKS.register_module()
class DetVocabularyCheckHook(Hook):
    """Check each dataset's ``metainfo['classes']`` against the detector's vocabulary.

    Labels index the head's train vocabulary in training and its test vocabulary in evaluation,
    so each must list the dataset's classes in the same order (compared after the same name
    cleaning, e.g. ``'aerosol_can'`` = ``'aerosol can'``); a mismatch would train or score the
    wrong classes silently. A ``.npy`` without class names is checked by length only.
    """

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        self._check(runner, runner.train_dataloader, 'train', training=True)

    def before_val(self, runner) -> None:
        self._check(runner, runner.val_loop.dataloader, 'val', training=False)

    def before_test(self, runner) -> None:
        self._check(runner, runner.test_loop.dataloader, 'test', training=False)

    @staticmethod
    def _check(runner, dataloader, split: str, training: bool) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        heads = zero_shot_classifiers(model)
        dataset = dataloader.dataset
        classes = getattr(dataset, 'metainfo', {}).get('classes')
        if not heads or classes is None:
            return
        classes = [clean_name(c) for c in classes]
        kind = 'vocabulary' if training else 'test_vocabulary'
        for head in heads:
            size, names = head.vocabulary_for(training)
            if size != len(classes):
                raise ValueError(f'the {split} dataset has {len(classes)} classes but the '
                                 f'detector head\'s {kind} has {size}; they must be the same '
                                 'list, in the same order')
            if names is None:
                continue
            bad = first_difference([c.lower() for c in classes], [n.lower() for n in names])
            if bad is not None:
                raise ValueError(f'the {split} dataset classes differ from the detector '
                                 f"head's {kind} at index {bad}: {classes[bad]!r} vs "
                                 f'{names[bad]!r}; list them in the same order')
