"""Open-vocabulary segmentation in the synthetic world, through the toolkits' own tools.

    python tools/synthetic_ov.py prepare         # scenes, SAN-format world CLIP, a POMP prompt
    python tools/synthetic_ov.py run             # train + test, POMP vs hand, seeds 0 1 2
    python tools/synthetic_ov.py run --quick     # one seed, a short schedule

``prepare`` renders the scene sets (pomp_mm.synthetic.scenes) to work_dirs/synthetic_ov/scenes,
converts the committed world CLIP to SAN's layout (pomp_mm.mmseg.convert) and pre-trains a POMP
prompt in the world (as make demo does). ``run`` trains configs/mmseg/pomp_synthetic-scenes.py
and its hand-template baseline with tools/train.py on the 15 seen classes, tests both on all 20
with tools/test.py, prints the table and writes work_dirs/synthetic_ov/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tools'))

from synthetic_demo import POMP_CONFIG, prepare_set, run_tool, train_prompt  # noqa: E402

WORK = 'work_dirs/synthetic_ov'
SEG_CONFIGS = {'hand': 'configs/mmseg/handprompt_synthetic-scenes.py',
               'pomp': 'configs/mmseg/pomp_synthetic-scenes.py'}
SEG_KEYS = ('mIoU-seen', 'mIoU-unseen', 'hIoU')
#: Scene sets of the protocol (seeds differ from every classification set's)
SCENE_SPLITS = {'train': (2000, 101), 'val': (200, 102)}
QUICK_SCENES = {'train': 400, 'val': 100}


def _paths(work: str) -> Dict[str, str]:
    return {'scenes': os.path.join(work, 'scenes'),
            'san': os.path.join(work, 'pomp-world-ViT-T-8_san.pth'),
            'prompt': os.path.join(work, 'pomp', 'prompt_latest.pth')}


def prepare(work: str, quick: bool, quiet: bool) -> Dict[str, str]:
    """Scenes, SAN weights and the world POMP prompt (each kept if already there)."""
    import torch

    from pomp_mm.fileio import atomic_torch_save
    from pomp_mm.mmseg.convert import clip_to_san_state_dict
    from pomp_mm.synthetic import protocol
    from pomp_mm.synthetic import world_clip as wc
    from pomp_mm.synthetic.scenes import write_scene_set
    paths = _paths(work)
    for split, (count, seed) in SCENE_SPLITS.items():
        count = QUICK_SCENES[split] if quick else count
        marker = os.path.join(paths['scenes'], 'splits', f'{split}.txt')
        if not os.path.isfile(marker) or len(open(marker).read().split()) != count:
            write_scene_set(paths['scenes'], split, count, seed, progress=not quiet)
    if not os.path.isfile(paths['san']):
        state = torch.load(wc.world_clip_weights(), map_location='cpu', weights_only=True)
        atomic_torch_save(clip_to_san_state_dict(state, split=3), paths['san'])
    if not os.path.isfile(paths['prompt']):
        data = prepare_set(os.path.join(work, 'pretrain'), protocol.pretrain_classes(), 1, 1,
                           POMP_CONFIG, 'synthetic-pretrain', work, quiet)
        train_prompt(POMP_CONFIG, os.path.dirname(paths['prompt']), data, seed=0, quiet=quiet)
    return paths


def _seg_run(method: str, seed: int, work: str, paths: Dict[str, str], iters: int,
             quiet: bool) -> Dict[str, float]:
    run_dir = os.path.join(work, 'seg', f'{method}_seed{seed}')
    metrics_path = os.path.join(run_dir, 'test.json')
    if os.path.isfile(metrics_path):  # resumable: a finished run is kept
        with open(metrics_path, encoding='utf-8') as f:
            return json.load(f)
    options = [f'randomness.seed={seed}', f'model.pretrained={paths["san"]}',
               f'max_iters={iters}', f'train_cfg.max_iters={iters}',
               f'train_cfg.val_interval={iters}', f'param_scheduler.0.end={iters}',
               f'default_hooks.checkpoint.interval={iters}',
               f'train_dataloader.dataset.data_root={paths["scenes"]}',
               f'val_dataloader.dataset.data_root={paths["scenes"]}',
               f'test_dataloader.dataset.data_root={paths["scenes"]}']
    if method == 'pomp':
        options.append(f'model.text_encoder.prompt={paths["prompt"]}')
    os.makedirs(run_dir, exist_ok=True)
    run_tool(['train.py', SEG_CONFIGS[method], '--work-dir', run_dir, '--cfg-options']
             + options, os.path.join(run_dir, 'train_tool.log') if quiet else None)
    ckpt = os.path.join(run_dir, f'iter_{iters}.pth')
    run_tool(['test.py', SEG_CONFIGS[method], ckpt, '--work-dir', os.path.join(run_dir, 'test'),
              '--out', metrics_path, '--cfg-options'] + options,
             os.path.join(run_dir, 'test_tool.log') if quiet else None)
    with open(metrics_path, encoding='utf-8') as f:
        return json.load(f)


def _mean_sd(values: List[float]) -> Dict[str, float]:
    return {'mean': statistics.fmean(values),
            'sd': statistics.stdev(values) if len(values) > 1 else 0.0}


def run(work: str, seeds: List[int], quick: bool, quiet: bool) -> Dict:
    paths = prepare(work, quick, quiet)
    iters = 200 if quick else 800
    per_seed = {m: [_seg_run(m, s, work, paths, iters, quiet) for s in seeds]
                for m in SEG_CONFIGS}
    seg = {m: {k: round(_mean_sd([r[k] for r in runs])['mean'], 2) for k in SEG_KEYS}
           for m, runs in per_seed.items()}
    spread = {m: {k: round(_mean_sd([r[k] for r in runs])['sd'], 2) for k in SEG_KEYS}
              for m, runs in per_seed.items()}
    results = {'seg': seg, 'seg_sd': spread, 'seeds': seeds, 'quick': quick,
               'seg_iters': iters, 'det': None}
    with open(os.path.join(work, 'results.json'), 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=1)
    print(format_table(results))
    return results


def format_table(results: Dict) -> str:
    seeds = ', '.join(map(str, results['seeds']))
    lines = [f'Synthetic scenes, SAN on the world CLIP, {results["seg_iters"]} iterations, '
             f'seeds {seeds} (mean ± sd); 15 seen / 5 unseen classes', '',
             '| prompt | ' + ' | '.join(SEG_KEYS) + ' |', '|---|' + '---:|' * len(SEG_KEYS)]
    for method, row in results['seg'].items():
        sd = results['seg_sd'][method]
        lines.append(f'| {method} | ' + ' | '.join(f'{row[k]:.1f} ± {sd[k]:.1f}'
                                                  for k in SEG_KEYS) + ' |')
    lines.append('')
    lines.append('Detection: not run yet (no zero-shot detection config in the world).')
    return '\n'.join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('command', choices=('prepare', 'run'))
    p.add_argument('--work-dir', default=WORK)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--quick', action='store_true', help='one seed, 400 scenes, 200 iterations')
    p.add_argument('--quiet', action='store_true', help='tool output to log files')
    args = p.parse_args(argv)
    seeds = args.seeds[:1] if args.quick else args.seeds
    work = os.path.abspath(args.work_dir)
    if args.command == 'prepare':
        print(json.dumps(prepare(work, args.quick, args.quiet), indent=1))
    else:
        run(work, seeds, args.quick, args.quiet)
    return 0


if __name__ == '__main__':
    sys.exit(main())
