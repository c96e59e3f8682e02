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


from pomp_mm._runner import (
    add_runner_args, build_runner, close_distributed, load_config)
from pomp_mm.cli import check_config_inputs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('config', help='test config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--out', help='also write the metrics to this .json file (mmdet/mmseg\'s '
                   'own tools/test.py --out dumps predictions instead)')
    p.add_argument('--show-dir', help='save drawn predictions in this folder')
    add_runner_args(p)
    return p.parse_args(argv)


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
    if args.out and not args.out.endswith('.json'):
        # mmdet's / mmseg's own test tools dump predictions with --out (res.pkl, a folder):
        # refuse rather than write metrics where predictions were expected
        raise SystemExit(f'--out {args.out!r}: this tool writes the metrics as JSON, so give a '
                         '.json path (to dump predictions use mmdet/mmseg\'s own tools/test.py)')
    cfg = load_config(args)
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):  # URLs: mmengine
        raise SystemExit(f'checkpoint not found: {args.checkpoint!r}')
    check_config_inputs(cfg, ['test_dataloader'])
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
    close_distributed()


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
