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


from pomp_mm._runner import (
    add_train_args, apply_train_args, build_runner, close_distributed, load_config)
from pomp_mm.cli import check_config_inputs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('config', help='training config file')
    add_train_args(p)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = apply_train_args(load_config(args), args)
    # before the Runner: its config dump and three chained tracebacks would bury the one
    # missing file
    check_config_inputs(cfg, ['train_dataloader'] + (['val_dataloader'] if cfg.get('val_cfg')
                                                     else []), weights=True)
    build_runner(cfg).train()
    close_distributed()


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
