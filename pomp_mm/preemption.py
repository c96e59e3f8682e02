"""Preemption-safe training under mmengine's Runner: stop at an iteration boundary on SIGTERM,
SIGINT or SIGUSR1, write a resume checkpoint atomically, and exit with ``128 + signal``.

Clusters preempt jobs with a signal and kill them after a grace period: SLURM sends SIGTERM at
the time limit (or the signal of ``--signal``, e.g. SIGUSR1, some seconds before), Kubernetes
SIGTERM then SIGKILL after ``terminationGracePeriodSeconds``. :class:`PreemptionHook` turns the
first such signal into a flag (the handler does no I/O), checks it after every training
iteration, agrees on it across DDP ranks (an all-reduce of the signal number, MAX), and then
writes ``iter_<n>.pth`` through ``runner.save_checkpoint`` to a temporary file renamed into
place, updates ``last_checkpoint`` (what ``--resume`` / ``resume=True`` read) and the prompt
files of any hook with a ``save_for_preemption(runner)`` method, logs one line saying where the
checkpoint is and how to resume, and raises :class:`Preempted` (a ``SystemExit`` with code
``128 + signum``: 143 for SIGTERM, 130 for SIGINT, 138 for SIGUSR1).

Further signals while it saves are ignored (SLURM signals every process of a step, torchrun
forwards its own SIGTERM to the workers: two copies of one request are common); the third
SIGINT aborts at once (an impatient Ctrl-C), which the atomic write makes harmless. DataLoader
workers ignore these signals: the main process stops them when it exits.

A mid-epoch checkpoint of an ``EpochBasedTrainLoop`` resumes at the batch where it stopped
(mmengine would rerun the epoch from its start): the resumed epoch's sampler skips the indices
already trained, without loading their images.
"""
from __future__ import annotations

import glob
import itertools
import os
import os.path as osp
import re
import shlex
import signal
import sys
import threading
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['PREEMPTION_SIGNALS', 'TEST_SIGNAL_ENV', 'Preempted', 'PreemptionHook',
           'install_signal_handlers', 'restore_signal_handlers', 'stop_requested',
           'latest_checkpoint']

#: the signals that request a stop (SLURM's ``--signal`` is usually SIGUSR1)
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
#: for tests: ``k`` (or ``k:SIGNAME``) makes rank 0 send itself the signal after iteration k
TEST_SIGNAL_ENV = 'POMP_TEST_SIGNAL_AT_ITER'
_CHECKPOINT_NAME = re.compile(r'(iter|epoch)_\d+\.pth')

# Written by the signal handler, read by the hook. Plain assignments only: a handler may run
# between any two bytecodes of the main thread.
_state: Dict[str, Any] = {'signum': 0, 'sigints': 0, 'pid': None, 'previous': {}}


class Preempted(SystemExit):
    """Training stopped on a signal after writing a resume checkpoint.

    A ``SystemExit`` with code ``128 + signum``, so that any tool exits as a shell reports a
    signalled job; ``tools/pretrain.py`` catches it to close the process group first.

    Attributes:
        signum: The signal that asked for the stop.
        iteration: Iterations done (the checkpoint's ``iter``).
        checkpoint: Path of the resume checkpoint.
    """

    def __init__(self, signum: int, iteration: int, checkpoint: str):
        super().__init__(128 + signum)
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint


def _handler(signum: int, frame: Any) -> None:
    if os.getpid() != _state['pid']:
        return  # a forked DataLoader worker inherited the handler: the main process decides
    if signum == signal.SIGINT:
        _state['sigints'] += 1
        if _state['sigints'] >= 3:
            raise KeyboardInterrupt
    if not _state['signum']:
        _state['signum'] = signum


def install_signal_handlers(signals: Sequence[int] = PREEMPTION_SIGNALS) -> None:
    """Route ``signals`` to the stop flag (main thread only; idempotent)."""
    if _state['pid'] == os.getpid():
        return
    _state.update(signum=0, sigints=0, pid=os.getpid(), previous={})
    for sig in signals:
        _state['previous'][sig] = signal.signal(sig, _handler)


def restore_signal_handlers() -> None:
    """Put back the handlers :func:`install_signal_handlers` replaced."""
    if _state['pid'] != os.getpid():
        return
    for sig, previous in _state['previous'].items():
        signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
    _state.update(pid=None, previous={})


def stop_requested() -> int:
    """The signal number of the first stop request in this process, 0 if none."""
    return _state['signum']


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint to auto-resume from: the one ``last_checkpoint`` names (also when the
    work dir has moved), else the newest ``iter_<n>.pth`` / ``epoch_<n>.pth`` in ``work_dir``
    (a deleted or missing ``last_checkpoint``), else None."""
    last = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last):
        with open(last) as f:
            named = f.read().strip()
        for candidate in (named, osp.join(work_dir, osp.basename(named))):
            if named and osp.isfile(candidate):
                return candidate
    found = [p for p in glob.glob(osp.join(glob.escape(work_dir), '*.pth'))
             if _CHECKPOINT_NAME.fullmatch(osp.basename(p))]
    return max(found, key=osp.getmtime) if found else None


def resume_command(argv: Optional[Sequence[str]] = None) -> str:
    """This process's command line with ``--resume`` (without a path) in place of any
    ``--resume [PATH]`` it had."""
    argv = list(sys.argv if argv is None else argv)
    args, i = [], 1
    while i < len(argv):
        if argv[i] == '--resume':
            i += 1
            if i < len(argv) and not argv[i].startswith('-') and argv[i].endswith('.pth'):
                i += 1
            continue
        if not argv[i].startswith('--resume='):
            args.append(argv[i])
        i += 1
    if os.environ.get('TORCHELASTIC_RUN_ID'):
        launcher = 'torchrun (as before)'
    else:
        launcher = 'python'
    return ' '.join([launcher, shlex.quote(argv[0])] + [shlex.quote(a) for a in args]
                    + ['--resume'])


class _SkipSampler:
    """A sampler without its first ``skip`` indices (the batches a resumed epoch has done)."""

    def __init__(self, sampler: Any, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


class _QuietWorker:
    """``worker_init_fn`` wrapper: a DataLoader worker ignores the stop signals.

    SLURM signals every process of a job step; a worker killed by SIGUSR1 or SIGTERM would fail
    the main process's next batch (or, through its SIGCHLD handler, any line of it). SIGTERM
    from the parent (the DataLoader's own shutdown) still ends the worker, as torch's handler
    does.
    """

    def __init__(self, init_fn: Optional[Callable[[int], Any]], parent: int):
        self.init_fn, self.parent = init_fn, parent

    def __call__(self, worker_id: int) -> None:
        if self.init_fn is not None:
            self.init_fn(worker_id)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        if not hasattr(signal, 'sigwaitinfo'):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            return
        # the main thread blocks SIGTERM; one thread takes it and exits if the parent sent it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=self._wait_for_parent_sigterm, daemon=True).start()

    def _wait_for_parent_sigterm(self) -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == self.parent or os.getppid() != self.parent:
                os._exit(0)


@HOOKS.register_module()
class PreemptionHook(Hook):
    """Stop at an iteration boundary on SIGTERM / SIGINT / SIGUSR1 with a resume checkpoint.

    See the module docstring. ``tools/pretrain.py`` adds it to every run.

    Args:
        interval: Check for a stop request every ``interval`` iterations (each check is one
            scalar all-reduce under DDP).
        signals: Signal numbers or names that request the stop.
    """

    priority = 'LOWEST'  # after CheckpointHook and the prompt hook have handled the iteration

    def __init__(self, interval: int = 1, signals: Sequence[Any] = ('SIGTERM', 'SIGINT',
                                                                     'SIGUSR1')):
        if interval < 1:
            raise ValueError(f'PreemptionHook interval must be >= 1, got {interval!r}')
        self.interval = interval
        self.signals = tuple(getattr(signal, s) if isinstance(s, str) else signal.Signals(s)
                             for s in signals)
        self._skipping: Optional[tuple] = None
        self._test_at = self._test_signal()

    @staticmethod
    def _test_signal() -> Optional[tuple]:
        spec = os.environ.get(TEST_SIGNAL_ENV, '')
        if not spec:
            return None
        at, _, name = spec.partition(':')
        return int(at), getattr(signal, name or 'SIGTERM')

    # -- set-up ------------------------------------------------------------------------------

    def before_train(self, runner) -> None:
        install_signal_handlers(self.signals)
        loop = runner.train_loop
        loader = loop.dataloader
        if getattr(loader, 'num_workers', 0) > 0 and not isinstance(loader.worker_init_fn,
                                                                    _QuietWorker):
            loader.worker_init_fn = _QuietWorker(loader.worker_init_fn, os.getpid())
            iterator = getattr(loop, 'dataloader_iterator', None)
            if iterator is not None:
                # IterBasedTrainLoop started its workers when it was built: start them again
                # with the wrapper (no batch has been drawn yet); persistent workers are
                # cached by the DataLoader, so stop those first
                cached = getattr(loader, '_iterator', None)
                if cached is not None:
                    loader._iterator = None
                    cached._shutdown_workers()
                loop.dataloader_iterator = type(iterator)(loader)

    def before_train_epoch(self, runner) -> None:
        loop = runner.train_loop
        if getattr(loop, 'dataloader_iterator', None) is not None:
            return  # iteration-based: mmengine itself advances the loader on resume
        loader = loop.dataloader
        done = runner.iter - runner.epoch * len(loader)
        if done <= 0:
            return
        batch_sampler = loader.batch_sampler
        from torch.utils.data import BatchSampler
        if type(batch_sampler) is not BatchSampler or done > len(loader):
            runner.logger.warning(
                f'resuming mid-epoch at iteration {runner.iter} ({done} batches into epoch '
                f'{runner.epoch + 1}): cannot skip them with a {type(batch_sampler).__name__} '
                f'over {len(loader)} batches, so the epoch restarts from its first batch')
            return
        self._skipping = (batch_sampler, batch_sampler.sampler)
        batch_sampler.sampler = _SkipSampler(batch_sampler.sampler,
                                             done * batch_sampler.batch_size)
        runner.logger.info(f'resuming epoch {runner.epoch + 1} at batch {done + 1} of '
                           f'{len(loader) + done}: the sampler skips the {done} batches done')

    def after_train_epoch(self, runner) -> None:
        if self._skipping is not None:
            batch_sampler, sampler = self._skipping
            batch_sampler.sampler = sampler
            self._skipping = None

    def after_train(self, runner) -> None:
        restore_signal_handlers()

    # -- the check -----------------------------------------------------------------------------

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        done = runner.iter + 1
        if self._test_at is not None and self._test_at[0] == done and runner.rank == 0:
            os.kill(os.getpid(), self._test_at[1])
        if done % self.interval and not self._is_last(runner):
            return
        signum = self._agreed_signal(stop_requested())
        if signum:
            self._stop(runner, signum)

    @staticmethod
    def _is_last(runner) -> bool:
        return runner.iter + 1 >= runner.max_iters

    @staticmethod
    def _agreed_signal(signum: int) -> int:
        from mmengine.dist import all_reduce, get_world_size
        if get_world_size() == 1:
            return signum
        import torch
        flag = torch.tensor([signum], dtype=torch.int64)
        all_reduce(flag, op='max')  # every rank stops after the same iteration
        return int(flag.item())

    def _stop(self, runner, signum: int) -> None:
        from mmengine.dist import is_main_process
        iteration = runner.iter + 1
        checkpoint = self._save_checkpoint(runner, iteration, signum)
        for hook in runner.hooks:
            save = getattr(hook, 'save_for_preemption', None)
            if save is not None and hook is not self:
                save(runner)
        restore_signal_handlers()
        if is_main_process():
            runner.logger.warning(
                f'preempted by {signal.Signals(signum).name} at iteration {iteration}: '
                f'checkpoint {checkpoint}; resume with: {resume_command()}')
        raise Preempted(signum, iteration, checkpoint)

    def _save_checkpoint(self, runner, iteration: int, signum: int) -> str:
        """``iter_<n>.pth`` through ``runner.save_checkpoint`` (rank 0 writes), atomically:
        a temporary file beside it, renamed once complete."""
        from mmengine.dist import is_main_process
        ckpt_hook = next((h for h in runner.hooks if type(h).__name__ == 'CheckpointHook'),
                         None)
        out_dir = getattr(ckpt_hook, 'out_dir', None) or runner.work_dir
        if not isinstance(out_dir, str) or '://' in out_dir:
            out_dir = runner.work_dir  # a remote backend cannot rename: keep it local
        path = osp.join(out_dir, f'iter_{iteration}.pth')
        if runner.message_hub.get_info('last_ckpt') == path and osp.isfile(path):
            return path  # CheckpointHook saved this very iteration a moment ago
        runner.message_hub.update_info('last_ckpt', path)
        tmp = osp.join(out_dir, f'.iter_{iteration}.pth.{os.getpid()}.tmp')
        try:
            runner.save_checkpoint(out_dir, osp.basename(tmp), by_epoch=False,
                                   meta=dict(preempted=int(signum)))
            if is_main_process():
                with open(tmp, 'rb') as f:
                    os.fsync(f.fileno())
                os.replace(tmp, path)
        finally:
            if osp.exists(tmp):
                os.unlink(tmp)
        if is_main_process():
            from .fileio import atomic_write
            atomic_write(osp.join(runner.work_dir, 'last_checkpoint'),
                         lambda f: f.write(path.encode()))
        return path
