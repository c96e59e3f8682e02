"""``VocabularyCheckHook`` (mmseg ``HOOKS``): each dataset's class list must be the model's
vocabulary, in the same order, before training, validation and testing."""
from __future__ import annotations


from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from ..vocabulary import first_difference
from ._classes import _vocabulary_keys


@HOOKS.register_module()
class VocabularyCheckHook(Hook):
    """Check each dataset's ``metainfo['classes']`` against the model's vocabulary.

    Label ids index the text encoder's vocabulary, so the two lists must be equal, in order;
    a mismatch (a ``'background'`` entry, a different order) trains or scores the wrong
    classes silently. Runs before training, validation and testing.
    """

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        self._check(runner, runner.train_dataloader, 'train')

    def before_val(self, runner) -> None:
        self._check(runner, runner.val_loop.dataloader, 'val')

    def before_test(self, runner) -> None:
        self._check(runner, runner.test_loop.dataloader, 'test')

    @staticmethod
    def _check(runner, dataloader, split: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        classes = getattr(dataloader.dataset, 'metainfo', {}).get('classes')
        if classes is None or not hasattr(model, 'text_encoder'):
            return
        keys = _vocabulary_keys(model.text_encoder)
        classes = tuple(classes)
        if classes not in keys:
            diff = first_difference(classes, keys[0])
            raise ValueError(
                f'the {split} dataset classes ({len(classes)}) differ from the text encoder '
                f'vocabulary ({len(keys[0])}) at index {diff}: '
                f'{classes[diff] if diff < len(classes) else "(end)"!r} vs '
                f'{keys[0][diff] if diff < len(keys[0]) else "(end)"!r}; set the dataset '
                f'metainfo=dict(classes=...) to the vocabulary, in the same order')
