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
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from pomp_mm._runner import (  # noqa: E402
    add_train_args, apply_train_args, build_runner, close_distributed, load_config)


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
    raise SystemExit(
        f'param_scheduler ends at epoch {max(ends)} but train_cfg.max_epochs is {max_epochs}: '
        'set the schedulers too (end, and T_max of the cosine), e.g. with a config like '
        'configs/pretrain/pomp_in21k-p_vit-b16_ctx16_ep20.py that sets max_epochs')


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
