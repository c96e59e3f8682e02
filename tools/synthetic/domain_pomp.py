"""Does POMP find a shared context where there is one? Pre-training on sketches vs photos.

``make demo``'s POMP recipe, pre-trained once on photo renderings of the pre-training classes
and once on sketch renderings of the same classes and image indices, then evaluated with
tools/eval_classification.py on sketches of the pre-training classes (``domain-sketch``), on
sketches of the 100 compositions no training saw (``heldout-sketch``) and on photos. Protocol:
docs/synthetic_world.md, "Does POMP find a context where there is one?".

    python tools/synthetic/domain_pomp.py            # 3 seeds, ~15 min on 2 cores; resumable
    python tools/synthetic/domain_pomp.py --quick    # one seed, 300 classes, 1 epoch

Writes work_dir/domain_pomp.json (every seed's numbers, per-class accuracies and the paired
intervals of the differences) and domain_pomp.md (the tables).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Dict, Optional, Sequence

from pomp_mm.synthetic import experiments as exp
from pomp_mm.synthetic.report import markdown_table, mean_sd

PRETRAIN_DOMAINS = ('photo', 'sketch')
HELDOUT_SKETCH = 'heldout-sketch'
SETS = ('domain-sketch', HELDOUT_SKETCH, 'heldout-compositions', 'domain-photo')


def eval_set(name: str, version: Optional[str] = None):
    """A set of protocol ``version`` (default: the current one), or ``heldout-sketch``: the
    held-out compositions rendered as sketches."""
    from pomp_mm.synthetic import protocol
    sets = protocol.eval_sets(version or protocol.PROTOCOL)
    if name == HELDOUT_SKETCH:
        return dataclasses.replace(sets['heldout-compositions'], name=HELDOUT_SKETCH,
                                   domain='sketch',
                                   semantics='unseen full compositions, sketch rendering')
    if name not in sets:
        raise ValueError(f'unknown set {name!r}; choose from {[HELDOUT_SKETCH, *sets]}')
    return sets[name]


def write_sets(root: str, names: Sequence[str], per_class: Optional[int],
               progress: bool) -> Dict[str, float]:
    """Render the evaluation sets under ``root/<name>/``; returns each set's chance (%)."""
    from pomp_mm.synthetic.datasets import write_eval_set
    chance = {}
    for name in names:
        s = eval_set(name)
        write_eval_set(s, os.path.join(root, name), per_class, progress=progress)
        chance[name] = s.chance
    return chance


def run_seed(args: argparse.Namespace, seed: int, work: str, eval_root: str) -> tuple:
    """Pre-train a prompt per domain for ``seed`` and evaluate both and the hand prompt:
    ``({method: {set: top-1 %}}, {method: {set: per-class top-1 %}})``."""
    from pomp_mm.synthetic import protocol
    classes = (protocol.pretrain_classes() if args.classes is None
               else protocol.subset_classes(args.classes, seed=0))
    vocab = 'synthetic-pretrain' if args.classes is None else None
    opts = exp.epoch_options(args.epochs)
    prompts = {}
    for domain in PRETRAIN_DOMAINS:
        data = exp.prepare_set(os.path.join(work, 'data', f'{domain}_seed{seed}'), classes, 1,
                                1 + seed, exp.POMP_CONFIG, vocab, work, args.quiet,
                                domain=domain)
        run_dir = os.path.join(work, 'runs', f'pomp-{domain}', f'seed{seed}')
        print(f'[domain_pomp] seed {seed}: pre-training on {domain} renderings', flush=True)
        exp.train_prompt(exp.POMP_CONFIG, run_dir, data, seed, opts, args.quiet)
        prompts[f'pomp-{domain}'] = os.path.join(run_dir, 'prompt_latest.pth')
    out = os.path.join(work, 'eval', f'seed{seed}')
    result = exp.evaluate(prompts, eval_root, args.sets, out, args.quiet, ensemble=False)
    return result, exp.per_class(prompts, out)


def format_table(state: Dict) -> str:
    """Rows: hand prompt, POMP pre-trained on photos, on sketches (mean ± sd over seeds)."""
    seeds = sorted(state['runs'], key=int)
    sets = list(state['chance'])
    first = state['runs'][seeds[0]]
    rows = [('hand', [first['hand']])] + [
        (m, [state['runs'][s][m] for s in seeds]) for m in (f'pomp-{d}' for d in PRETRAIN_DOMAINS)]
    cells = [[label] + [mean_sd([r[s] for r in per_seed]) for s in sets]
             for label, per_seed in rows]
    cells.append(['chance'] + [f'{state["chance"][s]:.1f}' for s in sets])
    lines = [f'POMP pre-trained on photo vs sketch renderings (top-1 %, seeds '
             f'{", ".join(seeds)})', ''] + markdown_table(['prompt'] + sets, cells)
    diffs = differences(state)
    if diffs:
        from pomp_mm.synthetic import report
        lines += ['', 'Differences, paired 95 % intervals (classes and seeds resampled):', '',
                  report.format_intervals(diffs, sets)]
    return '\n'.join(lines)


def differences(state: Dict) -> Dict:
    """Paired intervals per set of each pre-trained prompt against the hand prompt and of the
    sketch prompt against the photo prompt (runs that recorded per-class accuracies)."""
    from pomp_mm.evaluation import paired_bootstrap
    recorded = state.get('per_class', {})
    seeds = [s for s in sorted(state['runs'], key=int) if s in recorded]
    if not seeds:
        return {}
    per_seed = [recorded[s] for s in seeds]
    stacked = {m: {name: [p[m][name] for p in per_seed] for name in per_seed[0][m]}
               for m in per_seed[0]}
    stacked['hand'] = {name: v[:1] for name, v in stacked['hand'].items()}
    out = {}
    for a, b in (('pomp-sketch', 'hand'), ('pomp-photo', 'hand'), ('pomp-sketch', 'pomp-photo')):
        out[f'{a} - {b}'] = {name: paired_bootstrap({name: stacked[a][name]},
                                                    {name: stacked[b][name]}).as_dict()
                             for name in stacked[a]}
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--work-dir', default='work_dirs/domain_pomp')
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--classes', type=int, default=None,
                   help='pre-train on this many classes (default: all 23,900)')
    p.add_argument('--epochs', type=int, default=None, help="override the config's epochs")
    p.add_argument('--eval-per-class', type=int, default=None,
                   help="images per class of every set (default: each set's own)")
    p.add_argument('--sets', nargs='+', default=list(SETS))
    p.add_argument('--quick', action='store_true', help='one seed, 300 classes, 1 epoch, '
                   '1 image per class per set')
    p.add_argument('--quiet', action='store_true', help='tool output to log files')
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.classes, args.epochs, args.eval_per_class = [0], 300, 1, 1
    return args


def main(argv=None) -> Dict:
    args = parse_args(argv)
    from pomp_mm.synthetic.render import check_seed
    for seed in args.seeds:
        check_seed(seed)
    for name in args.sets:
        eval_set(name)
    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, 'domain_pomp.json')
    state = exp.load_state(path, {'runs': {}})
    from pomp_mm.synthetic import protocol
    from pomp_mm.synthetic.world_clip import read_card
    recipe = {'classes': args.classes, 'epochs': args.epochs,
              'eval_per_class': args.eval_per_class, 'sets': args.sets,
              'protocol': protocol.PROTOCOL, 'clip_sha256': read_card()['sha256']}
    if state['runs'] and state.get('recipe') != recipe:
        # resuming would put runs of two recipes in one table
        raise ValueError(f'{path} holds runs of {state.get("recipe")}, not {recipe}: use '
                         'another --work-dir')
    state['recipe'] = recipe
    eval_root = os.path.join(work, 'data', f'eval_{protocol.PROTOCOL}')
    state['chance'] = write_sets(eval_root, args.sets, args.eval_per_class, not args.quiet)
    for seed in args.seeds:
        if str(seed) not in state['runs']:
            try:
                state['runs'][str(seed)], per_class = run_seed(args, seed, work, eval_root)
            except exp.ToolError as err:
                raise SystemExit(f'domain_pomp: {err}') from None
            state.setdefault('per_class', {})[str(seed)] = per_class
            exp.save_state(path, state)
    state['differences'] = differences(state)
    exp.save_state(path, state)
    table = format_table(state)
    with open(os.path.join(work, 'domain_pomp.md'), 'w', encoding='utf-8') as f:
        f.write(table + '\n')
    print('\n' + table)
    return state


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
