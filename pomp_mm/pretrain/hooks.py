"""mmengine hooks for prompt pre-training."""
from __future__ import annotations

import os
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..preemption import PreemptionHook
from ..prompt_checkpoint import save_prompt
from .data import resolve_preprocess

__all__ = ['PreemptionHook', 'PromptCheckpointHook']


@HOOKS.register_module()
class PromptCheckpointHook(Hook):
    """Write the prompt alone (a few KB, pomp_mm format) every ``interval`` iterations and at
    the end of training, atomically, as ``prompt_iter_<n>.pth`` and ``prompt_latest.pth`` in
    the work dir. mmengine's ``CheckpointHook`` keeps writing the full resume checkpoints.

    Before training it also checks that the training dataset's class list
    (``metainfo['classes']``, which its labels index) equals the model vocabulary
    (:meth:`~pomp_mm.pretrain.PompPretrainer.check_label_space`), and gives a
    ``sampling='frequency'`` model without ``class_counts`` the dataset's own counts.

    Args:
        interval: Iterations between prompt checkpoints (<= 0: only at the end).
        out_dir: Folder (default: the runner's work dir).
        check_labels: Run the label-space check at ``before_train``.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 1000, out_dir: Optional[str] = None,
                 check_labels: bool = True):
        self.interval = interval
        self.out_dir = out_dir
        self.check_labels = check_labels

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        dataset = runner.train_dataloader.dataset
        if getattr(model, 'counts_pending', False):
            counts = getattr(dataset, 'class_counts', None)
            if counts is None:
                raise ValueError(f"sampling='frequency' without model.class_counts needs a "
                                 f'dataset that counts its classes; {type(dataset).__name__} '
                                 'does not: give class_counts in the config')
            model.set_class_counts(counts)
            runner.logger.info(f'frequency sampling: class counts from the training dataset '
                               f'({sum(counts)} images, {sum(c > 0 for c in counts)} of '
                               f'{len(counts)} classes present)')
        if not self.check_labels:
            return
        if not hasattr(model, 'check_label_space'):
            return
        metainfo = getattr(dataset, 'metainfo', None) or {}
        model.check_label_space(metainfo.get('classes'))
        # the dataset is built from the config, apart from the model: flag preprocessing that
        # does not match the CLIP tower's own (e.g. OpenAI mean/std for a SigLIP model)
        ours = getattr(dataset, 'preprocess', None)
        theirs = getattr(getattr(model, 'visual', None), 'preprocess_cfg', None)
        if ours and theirs:
            want = resolve_preprocess(theirs)
            diff = {k: (ours[k], want[k]) for k in ('mean', 'std', 'interpolation')
                    if ours[k] != want[k]}
            if diff:
                runner.logger.warning(
                    'the dataset preprocessing differs from the CLIP model\'s: ' + ', '.join(
                        f'{k} {a} (model: {b})' for k, (a, b) in diff.items())
                    + '; pass the model\'s settings as the dataset\'s preprocess=dict(...)')

    def _save(self, runner, tag: str, iteration: Optional[int] = None) -> str:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        out_dir = self.out_dir or runner.work_dir
        # iterations done: after_train_iter runs before the loop counts its iteration
        iteration = runner.iter if iteration is None else iteration
        meta = dict(model.prompt_metadata(), iteration=iteration, epoch=runner.epoch)
        path = save_prompt(os.path.join(out_dir, f'prompt_{tag}.pth'),
                           model.prompt_learner.ctx, **meta)
        save_prompt(os.path.join(out_dir, 'prompt_latest.pth'), model.prompt_learner.ctx, **meta)
        runner.logger.info(f'prompt saved to {path}')
        return path

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.rank != 0 or self.interval <= 0:
            return
        if self.every_n_train_iters(runner, self.interval):
            self._save(runner, f'iter_{runner.iter + 1}', runner.iter + 1)

    def after_train(self, runner) -> None:
        if runner.rank == 0:
            self._save(runner, 'final')

    def save_for_preemption(self, runner) -> None:
        """Called by :class:`~pomp_mm.preemption.PreemptionHook` before a preempted run exits:
        the prompt of the iteration reached, as ``prompt_iter_<n>.pth`` and
        ``prompt_latest.pth``."""
        if runner.rank == 0:
            self._save(runner, f'iter_{runner.iter + 1}', runner.iter + 1)
