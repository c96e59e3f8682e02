"""Pre-train a POMP prompt with mmengine's Runner.

    python tools/pretrain.py configs/pretrain/pomp_in21k-p_vit-b16.py
    torchrun --nproc-per-node 8 tools/pretrain.py CONFIG --launcher pytorch
    python tools/pretrain.py CONFIG --resume            # continue from the latest checkpoint

The prompt alone is written as work_dir/prompt_latest.pth (and prompt_iter_<n>.pth); full
resume checkpoints by mmengine's CheckpointHook (PromptCheckpointHook is added when the config
lacks it: it also checks at the start that the dataset's classes are the model's vocabulary).
Options as tools/train.py (--work-dir, --cfg-options, --amp, --resume, --launcher).

Preemption: on SIGTERM, SIGINT or SIGUSR1 (SLURM's --signal) the run finishes the current
iteration, writes work_dir/iter_<n>.pth and the prompt, and exits with 128 + the signal number
(143 for SIGTERM, 130 for SIGINT, 138 for SIGUSR1), logging the command that resumes it.
--resume without a path (or resume = True / auto_resume = True in the config) resumes from the
checkpoint the work dir's last_checkpoint names, else its newest iter_<n>.pth / epoch_<n>.pth,
else starts from the beginning. See docs/pretraining.md, "Clusters and preemption".
"""
from __future__ import annotations

import argparse
import os.path as osp
import re
from typing import Any, Iterator, Optional, Tuple

from pomp_mm._runner import (
    add_train_args, apply_train_args, build_runner, check_schedule, close_distributed,
    ensure_prompt_hook, load_config)
from pomp_mm.cli import DOCS, check_config_inputs


def ensure_preemption_hook(cfg) -> None:
    """Add a PreemptionHook (stop on SIGTERM/SIGINT/SIGUSR1 with a checkpoint) if missing."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') in ('PreemptionHook', 'pomp_mm.PreemptionHook') for h in hooks):
        cfg.custom_hooks = hooks + [dict(type='PreemptionHook')]


def resolve_resume(cfg, args: argparse.Namespace) -> None:
    """``--resume PATH`` must exist; auto-resume (``--resume``, ``resume=True`` without
    ``load_from``, or ``auto_resume=True``) picks the work dir's latest checkpoint, also when
    ``last_checkpoint`` is missing or names a moved file. Nothing there: a fresh start."""
    from pomp_mm.preemption import latest_checkpoint
    if args.resume not in (None, 'auto') and not osp.isfile(args.resume):
        raise FileNotFoundError(f'--resume {args.resume!r}: no such checkpoint (--resume '
                                'without a path resumes from the latest one in the work dir)')
    if cfg.get('auto_resume'):
        cfg.resume, cfg.load_from = True, None
    if cfg.get('resume') is True and cfg.get('load_from') is None:
        found = latest_checkpoint(cfg.work_dir)
        if found is not None:
            cfg.load_from = found


def _config_strings(node: Any, prefix: str = '') -> Iterator[Tuple[str, str]]:
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(node))
    else:
        if isinstance(node, str) and prefix:
            yield prefix, node
        return
    for key, value in items:
        yield from _config_strings(value, f'{prefix}.{key}' if prefix else str(key))


def explain_missing(err: BaseException, cfg) -> Optional[str]:
    """One line for a missing input that :func:`~pomp_mm.cli.check_config_inputs` does not
    check beforehand (an image list, a vocabulary file, ...): the message with the config key
    holding the path and how to point it at a local copy; None when ``err`` names no path of
    the config."""
    if not isinstance(err, FileNotFoundError):
        return None
    message = str(err.args[0]) if err.args else str(err)
    message = re.sub(r'^class `\w+` in [\w.]+: ', '', message)  # mmengine's registry prefix
    hits = [(key, value) for key, value in _config_strings(cfg.to_dict())
            if not key.endswith('type') and value and (f"'{value}'" in message
                                                       or f'"{value}"' in message)]
    if not hits:
        return None
    # a nested key is what the code reads (a top-level variable was already substituted)
    key, value = max(hits, key=lambda kv: ('.' in kv[0], len(kv[1])))
    local = f'/path/{osp.basename(value.rstrip("/")) or "copy"}'
    return (f'{message} ({key} in the config); point it at a local copy (--cfg-options '
            f'{key}={local}); see {DOCS}')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('config', help='pre-training config file')
    add_train_args(p)
    args = p.parse_args(argv)
    import pomp_mm.pretrain  # noqa: F401  PompPretrainer, datasets, hooks
    from pomp_mm.preemption import Preempted
    cfg = apply_train_args(load_config(args), args)
    resolve_resume(cfg, args)
    # CLIP weights (file, or a tag not cached with the hub offline), dataset roots, load_from
    check_config_inputs(cfg, ['train_dataloader'], weights=True)
    ensure_prompt_hook(cfg)
    ensure_preemption_hook(cfg)
    check_schedule(cfg)
    try:
        build_runner(cfg).train()
    except Preempted as stop:  # the checkpoint is written and the line logged
        close_distributed()
        return stop.code
    except FileNotFoundError as err:
        explained = explain_missing(err, cfg)
        if explained is None:
            raise
        raise FileNotFoundError(explained) from err
    close_distributed()
    return 0


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
