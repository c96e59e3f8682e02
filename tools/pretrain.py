"""Pre-train a POMP prompt with mmengine's Runner.

    python tools/pretrain.py configs/pretrain/pomp_in21k-p_vit-b16.py
    torchrun --nproc-per-node 8 tools/pretrain.py CONFIG --launcher pytorch
    python tools/pretrain.py CONFIG --resume            # continue from the latest checkpoint

The prompt alone is written as work_dir/prompt_latest.pth (and prompt_iter_<n>.pth); full
resume checkpoints by mmengine's CheckpointHook.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('config', help='pre-training config file')
    p.add_argument('--work-dir', help='where logs and checkpoints go')
    p.add_argument('--resume', nargs='?', const='auto',
                   help='resume from a checkpoint path, or the latest one with no value')
    p.add_argument('--amp', action='store_true', help='automatic mixed precision')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, e.g. model.num_sampled=512')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local-rank', '--local_rank', type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import pomp_mm  # noqa: F401  registers models, datasets, hooks; safe checkpoint loading
    import pomp_mm.pretrain  # noqa: F401
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
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
    if args.amp:
        if not torch.cuda.is_available():
            raise SystemExit('--amp needs a CUDA GPU (mmengine AmpOptimWrapper); none found')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('dtype', 'bfloat16')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
