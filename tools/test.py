"""Evaluate an MMSegmentation or MMDetection checkpoint with mmengine's Runner.

    python tools/test.py configs/mmseg/pomp_voc.py work_dirs/pomp_voc/iter_20000.pth
    python tools/test.py CONFIG CKPT --out metrics.json --show-dir vis

The metrics are logged and written to work_dir/<timestamp>/<timestamp>.json by mmengine;
``--out`` also writes them to a JSON file of your choice. The toolkit comes from the config's
``default_scope``.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('config', help='test config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--work-dir', help='where logs and the metrics JSON go')
    p.add_argument('--out', help='also write the metrics to this JSON file')
    p.add_argument('--show-dir', help='save drawn predictions in this folder')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, e.g. test_dataloader.batch_size=1')
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


def enable_drawing(cfg, show_dir: str) -> None:
    """Turn on the config's visualization hook, saving drawings under ``show_dir``."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise SystemExit('--show-dir needs default_hooks.visualization in the config')
    hook['draw'] = True
    hook['interval'] = 1  # every image, not every 50th
    if 'Det' in str(hook.get('type')):
        hook['test_out_dir'] = osp.abspath(show_dir)  # mmdet's hook writes there itself
    else:
        cfg.visualizer['save_dir'] = show_dir  # mmseg's hook writes through the visualizer


def main(argv=None) -> None:
    args = parse_args(argv)
    import pomp_mm  # noqa: F401  registers PompTextEncoder; safe checkpoint loading
    from mmengine.config import Config

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint!r}')
    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_drawing(cfg, args.show_dir)
    metrics = build_runner(cfg).test()
    from mmengine.dist import is_main_process
    if args.out and is_main_process():
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w', encoding='utf-8') as f:
            # numpy scalars -> float; anything else (e.g. a table) -> its string
            json.dump({k: float(v) if hasattr(v, '__float__') else str(v)
                       for k, v in (metrics or {}).items()}, f, indent=2)
        print(f'metrics written to {args.out}')


if __name__ == '__main__':
    main()
