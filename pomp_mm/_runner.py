"""Private: the shared plumbing of the command-line tools that drive mmengine's Runner
(``tools/train.py``, ``tools/test.py``, ``tools/pretrain.py``)."""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Any

__all__ = ['add_runner_args', 'add_train_args', 'load_config', 'apply_train_args',
           'build_runner', 'ensure_prompt_hook', 'check_schedule', 'close_distributed']


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher``, ``--local-rank``."""
    from mmengine.config import DictAction
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: the '
                        "config's work_dir, else work_dirs/<config name>)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_iters=1000')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none')
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0)


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """:func:`add_runner_args` plus ``--resume`` and ``--amp``."""
    add_runner_args(parser)
    parser.add_argument('--resume', nargs='?', const='auto',
                        help='resume from a checkpoint path; with no value, the latest one '
                        'in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (needs CUDA): bfloat16 where the GPU '
                        'supports it, else float16 with dynamic loss scaling')


def load_config(args: argparse.Namespace) -> Any:
    """Read ``args.config`` and apply the common options."""
    import torch
    from mmengine.config import Config
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    seed = (cfg.get('randomness') or {}).get('seed')
    if seed is not None and not (isinstance(seed, int) and 0 <= seed < 2 ** 32):
        # numpy's own message names no option
        raise ValueError(f'randomness.seed={seed!r} is out of range: seeds are integers from 0 '
                         'to 2**32 - 1 (or None for a random one)')
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.launcher != 'none' and not torch.cuda.is_available():
        # CPU DDP (gloo): DDP wants device_ids=None for CPU modules, mmengine passes the rank
        cfg.model_wrapper_cfg = dict(cfg.get('model_wrapper_cfg') or
                                     dict(type='MMDistributedDataParallel'), device_ids=None)
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
        if args.launcher == 'pytorch' and not torch.distributed.is_initialized():
            # mmengine's pytorch launcher calls torch.cuda.set_device even for gloo; a group
            # that already exists makes it skip its own initialisation
            torch.distributed.init_process_group('gloo')
    return cfg


def apply_train_args(cfg: Any, args: argparse.Namespace) -> Any:
    """Apply ``--amp`` and ``--resume``.

    ``--amp`` switches the config's optimizer wrapper to mmengine's ``AmpOptimWrapper``
    running bfloat16 where the GPU supports it, else float16 with dynamic loss scaling; which
    one is logged. A config that already names ``AmpOptimWrapper`` is left as it is.
    """
    import torch
    from mmengine.logging import print_log
    if args.amp:
        if not torch.cuda.is_available():
            raise SystemExit('--amp needs a CUDA GPU (mmengine AmpOptimWrapper); none found')
        if cfg.optim_wrapper.get('type') != 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            if torch.cuda.is_bf16_supported():
                # bf16 has float32's exponent range: gradients cannot underflow, so a fixed
                # scale of 1 (no scaling) instead of the fp16 dynamic scaler
                cfg.optim_wrapper.dtype = 'bfloat16'
                cfg.optim_wrapper.setdefault('loss_scale', 1.0)
            else:
                cfg.optim_wrapper.dtype = 'float16'
                cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        dtype = cfg.optim_wrapper.get('dtype') or 'float16'  # mmengine's autocast default
        print_log(f'--amp: mixed precision in {dtype} (loss_scale='
                  f'{cfg.optim_wrapper.get("loss_scale", "dynamic")!r})', logger='current')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def build_runner(cfg: Any):
    """The config's runner: ``runner_type`` if it names one, else mmengine's Runner."""
    import pomp_mm  # noqa: F401  registers PompTextEncoder; safe checkpoint loading
    from mmengine.registry import RUNNERS, init_default_scope
    from mmengine.runner import Runner
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)  # sets the default scope from cfg.default_scope itself
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return RUNNERS.build(cfg)


def ensure_prompt_hook(cfg) -> None:
    """Add a PromptCheckpointHook (prompt saving + label-space check) if the config has none."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') in ('PromptCheckpointHook', 'pomp_mm.PromptCheckpointHook')
               for h in hooks):
        cfg.custom_hooks = hooks + [dict(type='PromptCheckpointHook')]


def check_schedule(cfg) -> None:
    """Refuse an epoch-based schedule that does not end at ``train_cfg.max_epochs``.

    The configs write ``max_epochs`` into the schedulers' ``end`` / ``T_max`` when they are
    read, so ``--cfg-options train_cfg.max_epochs=N`` alone would keep the old cosine: the LR
    would sit at its floor for the extra epochs, or never anneal.
    """
    max_epochs = (cfg.get('train_cfg') or {}).get('max_epochs')
    schedulers = cfg.get('param_scheduler') or []
    schedulers = [schedulers] if isinstance(schedulers, dict) else list(schedulers)
    ends = [s['end'] for s in schedulers if s.get('by_epoch', True) and 'end' in s]
    if max_epochs is None or not ends or max(ends) == max_epochs:
        return
    raise ValueError(
        f'param_scheduler ends at epoch {max(ends)} but train_cfg.max_epochs is {max_epochs}: '
        'set the schedulers too (end, and T_max of the cosine), e.g. with a config like '
        'configs/pretrain/pomp_in21k-p_vit-b16_ctx16_ep20.py that sets max_epochs')


def close_distributed() -> None:
    """Wait for every rank, then destroy the process group (after a successful run only).

    Left to interpreter shutdown, a gloo group's threads can be torn down while still joinable
    and abort the process ("terminate called without an active exception", SIGABRT), failing a
    run whose work was already saved.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
