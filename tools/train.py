"""Train an MMSegmentation or MMDetection model from a config with mmengine's Runner.

    python tools/train.py configs/mmseg/pomp_voc.py
    python tools/train.py CONFIG --work-dir work_dirs/run1 --cfg-options train_cfg.max_iters=100
    python tools/train.py CONFIG --resume                  # the latest checkpoint in work_dir
    torchrun --nproc-per-node 4 tools/train.py CONFIG --launcher pytorch

The toolkit comes from the config's ``default_scope`` ('mmseg', 'mmdet'); its
``custom_imports`` load the pomp_mm adapters.
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
    p.add_argument('config', help='training config file')
    p.add_argument('--work-dir', help='where logs and checkpoints go '
                   '(default: the config\'s work_dir, else work_dirs/<config name>)')
    p.add_argument('--resume', nargs='?', const='auto',
                   help='resume from a checkpoint path; with no value, the latest in work_dir')
    p.add_argument('--amp', action='store_true', help='automatic mixed precision (CUDA)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, e.g. train_cfg.max_iters=1000')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local-rank', '--local_rank', type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_runner(cfg):
    """The config's runner: ``runner_type`` if it names one, else mmengine's Runner."""
    from mmengine.registry import RUNNERS, init_default_scope
    from mmengine.runner import Runner
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)  # sets the default scope from cfg.default_scope itself
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return RUNNERS.build(cfg)


def main(argv=None) -> None:
    args = parse_args(argv)
    import pomp_mm  # noqa: F401  registers PompTextEncoder; safe checkpoint loading
    import torch
    from mmengine.config import Config

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        if not torch.cuda.is_available():
            raise SystemExit('--amp needs a CUDA GPU (mmengine AmpOptimWrapper); none found')
        if cfg.optim_wrapper.get('type') != 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    build_runner(cfg).train()


if __name__ == '__main__':
    main()
