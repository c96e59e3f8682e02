"""Pre-train a POMP prompt with mmengine's Runner.

    python tools/pretrain.py configs/pretrain/pomp_in21k-p_vit-b16.py
    torchrun --nproc-per-node 8 tools/pretrain.py CONFIG --launcher pytorch
    python tools/pretrain.py CONFIG --resume            # continue from the latest checkpoint

The prompt alone is written as work_dir/prompt_latest.pth (and prompt_iter_<n>.pth); full
resume checkpoints by mmengine's CheckpointHook (PromptCheckpointHook is added when the config
lacks it: it also checks at the start that the dataset's classes are the model's vocabulary).
Options as tools/train.py (--work-dir, --cfg-options, --amp, --resume, --launcher).
"""
from __future__ import annotations

import argparse


from pomp_mm._runner import (
    add_train_args, apply_train_args, build_runner, check_schedule, close_distributed,
    ensure_prompt_hook, load_config)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('config', help='pre-training config file')
    add_train_args(p)
    args = p.parse_args(argv)
    import pomp_mm.pretrain  # noqa: F401  PompPretrainer, datasets, hooks
    cfg = apply_train_args(load_config(args), args)
    ensure_prompt_hook(cfg)
    check_schedule(cfg)
    build_runner(cfg).train()
    close_distributed()


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
