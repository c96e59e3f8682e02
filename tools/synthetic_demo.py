"""make demo: POMP end to end in the synthetic world, through the real tools, offline.

Renders the few-shot pre-training set over the 23,900 pre-training classes, the CoOp baseline's
1,000-class set and the downstream sets; caches image features (tools/cache_features.py);
pre-trains a POMP prompt (configs/pretrain/pomp_synthetic_cached.py) and a CoOp-style prompt
with a full softmax over 1,000 classes (coop_synthetic-1k_cached.py) with tools/pretrain.py;
evaluates hand prompt, template ensemble, CoOp-1K and POMP with tools/eval_classification.py;
prints the table and writes work_dir/results.json (top-1 % per method and set, paired
intervals of the differences), results.md and results.png.

    python tools/synthetic_demo.py                      # the full demo (protocol v3 sets)
    python tools/synthetic_demo.py --classes 300 --coop-classes 50 --epochs 1 --eval-per-class 1
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

METHODS = {'hand prompt': 'hand', 'template ensemble': 'ensemble'}
POMP_CONFIG = os.path.join(ROOT, 'configs/pretrain/pomp_synthetic.py')
COOP_CONFIG = os.path.join(ROOT, 'configs/pretrain/coop_synthetic-1k.py')


def run_tool(argv: Sequence[str], log: Optional[str] = None) -> Dict[str, float]:
    """Run ``python tools/<argv[0]> argv[1:]``; raise with the log's tail if it fails.

    Returns the child's wall time and peak resident memory (MB)."""
    cmd = [sys.executable, os.path.join(ROOT, 'tools', argv[0])] + list(argv[1:])
    start = time.perf_counter()
    out = open(log, 'w', encoding='utf-8') if log else None
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if out
                                else None)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if out:
            out.close()
    if proc.returncode:
        tail = ''
        if log:
            with open(log, encoding='utf-8', errors='replace') as f:
                tail = ''.join(f.readlines()[-30:])
        raise SystemExit(f'{" ".join(cmd)} failed with exit code {proc.returncode}\n{tail}')
    return {'seconds': time.perf_counter() - start, 'peak_rss_mb': usage.ru_maxrss / 1024}


def _vocab_file(path: str, classes) -> str:
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(c.id + '\n' for c in classes)
    return path


def prepare_set(out_dir: str, classes, shots: int, seed: int, config: str,
                full_vocab: Optional[str], log_dir: str, quiet: bool,
                domain: str = 'photo') -> Dict[str, str]:
    """Render a pre-training set and cache its features (tools/cache_features.py); returns the
    feature cache folder and the vocabulary (a class-id file when ``classes`` is a subset)."""
    from pomp_mm.synthetic.datasets import write_pretrain_set
    csv_path = write_pretrain_set(out_dir, classes, shots, seed, progress=not quiet,
                                  domain=domain)
    vocab = full_vocab or _vocab_file(os.path.join(out_dir, 'classes.txt'), classes)
    features = os.path.join(out_dir, 'features')
    options = [f'train_dataloader.dataset.source={csv_path}',
               f'train_dataloader.dataset.vocabulary={vocab}', f'model.vocabulary={vocab}']
    run_tool(['cache_features.py', config, '--out-dir', features, '--batch-size', '256',
              '--cfg-options'] + options,
             os.path.join(log_dir, f'cache_{os.path.basename(out_dir)}.log') if quiet else None)
    return {'cache_dir': features, 'vocabulary': vocab}


def train_prompt(config: str, work_dir: str, data: Dict[str, str], seed: int,
                 options: Sequence[str] = (), quiet: bool = False) -> Dict[str, float]:
    """tools/pretrain.py on a cached set; the prompt lands in work_dir/prompt_latest.pth."""
    cached = config.replace('.py', '_cached.py')
    argv = ['pretrain.py', cached, '--work-dir', work_dir, '--cfg-options',
            f'train_dataloader.dataset.cache_dir={data["cache_dir"]}',
            f'model.vocabulary={data["vocabulary"]}', f'model.seed={seed}',
            f'randomness.seed={seed}'] + list(options)
    os.makedirs(work_dir, exist_ok=True)
    return run_tool(argv, os.path.join(work_dir, 'pretrain.log') if quiet else None)


def evaluate(prompts: Dict[str, str], eval_root: str, set_names: Sequence[str], out_dir: str,
             quiet: bool = False, ensemble: bool = True) -> Dict[str, Dict[str, float]]:
    """tools/eval_classification.py on the rendered sets; ``{method: {set: top-1 %}}``
    (per-class accuracies: :func:`per_class`)."""
    from pomp_mm.synthetic.world_clip import MODEL_NAME, world_clip_weights
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, 'eval.json')
    argv = ['eval_classification.py', '--datasets', 'none', '--clip-model', MODEL_NAME,
            '--pretrained', world_clip_weights(), '--out-dir', out_dir, '--json', json_path,
            '--workers', '0', '--batch-size', '256']
    if not ensemble:
        argv.append('--no-ensemble')
    if prompts:
        argv += ['--prompts'] + list(prompts.values())
    for name in set_names:
        argv += ['--folder', f'{name}={os.path.join(eval_root, name)}']
    run_tool(argv, os.path.join(out_dir, 'eval.log') if quiet else None)
    with open(json_path, encoding='utf-8') as f:
        raw = json.load(f)['results']
    labels = _method_labels(prompts)
    return {labels.get(m, m): accs for m, accs in raw.items()}


def _method_labels(prompts: Dict[str, str]) -> Dict[str, str]:
    # the eval tool names a prompt row by its file name, or by its path where names clash
    bases = [os.path.basename(p) for p in prompts.values()]
    labels = dict(METHODS)
    for method, path in prompts.items():
        base = os.path.basename(path)
        labels[base if bases.count(base) == 1 else path] = method
    return labels


def per_class(prompts: Dict[str, str], out_dir: str) -> Dict[str, Dict[str, List[float]]]:
    """``{method: {set: per-class top-1 %}}`` of the :func:`evaluate` run in ``out_dir``."""
    with open(os.path.join(out_dir, 'eval.json'), encoding='utf-8') as f:
        raw = json.load(f)['per_class']
    labels = _method_labels(prompts)
    return {labels.get(m, m): accs for m, accs in raw.items()}


def summarise(results: Dict[str, Dict[str, float]],
              version: str = 'v3') -> Dict[str, Dict[str, float]]:
    """Add the cross-dataset ("mean", as the paper's) and cross-domain means, and chance."""
    from pomp_mm.synthetic.protocol import CROSS_DOMAIN_SETS, cross_dataset_sets, eval_sets
    out = {}
    rows = dict(results)
    any_row = next(iter(results.values()))
    rows['chance'] = {s: eval_sets(version)[s].chance for s in any_row}
    for method, accs in rows.items():
        row = dict(accs)
        for key, group in (('mean', cross_dataset_sets(version)),
                           ('domain_mean', CROSS_DOMAIN_SETS)):
            have = [row[s] for s in group if s in row]
            if have:
                row[key] = sum(have) / len(have)
        out[method] = row
    return out


def intervals_report(per_class_acc, summary, version: str, png: str, title: str) -> dict:
    """Paired intervals of the method differences, accuracy intervals, and the plot."""
    from pomp_mm.synthetic import report
    pairs = report.pair_intervals(per_class_acc, version=version)
    acc = report.accuracy_intervals(per_class_acc)
    chance = summary.get('chance', {})
    report.plot_accuracies(acc, png, title, chance)
    groups = [g for g in ('mean', 'domain_mean', 'source', 'shapes')
              if any(g in v for v in pairs.values())]
    return {'json': {'differences': pairs, 'accuracy_intervals': acc},
            'table': report.format_intervals(pairs, groups)}


def format_table(summary: Dict[str, Dict[str, float]], title: str = '') -> str:
    sets = [k for k in next(iter(summary.values())) if k not in ('mean', 'domain_mean')]
    cols = sets + [k for k in ('mean', 'domain_mean') if k in next(iter(summary.values()))]
    lines = ([title, ''] if title else []) + [
        '| method | ' + ' | '.join(cols) + ' |', '|---|' + '---:|' * len(cols)]
    for method, row in summary.items():
        lines.append(f'| {method} | ' + ' | '.join(f'{row[c]:.1f}' if c in row else '-'
                                                  for c in cols) + ' |')
    return '\n'.join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument('--seed', type=int, default=0, help='seed of the pre-training images and '
                   'of prompt training (the CLIP and the evaluation sets are fixed)')
    p.add_argument('--classes', type=int, default=None,
                   help='pre-train on this many random pre-training classes (default: all '
                   '23,900)')
    p.add_argument('--shots', type=int, default=1, help='images per pre-training class')
    p.add_argument('--coop-classes', type=int, default=1000,
                   help='CoOp baseline classes: the first N of the 1,000-class subset')
    p.add_argument('--coop-shots', type=int, default=16)
    p.add_argument('--epochs', type=int, default=None, help='override both configs\' epochs')
    p.add_argument('--eval-per-class', type=int, default=None,
                   help='images per class of each evaluation set (default: the protocol\'s)')
    p.add_argument('--sets', nargs='+', default=None, metavar='SET',
                   help='evaluate only these downstream sets (default: all of the protocol)')
    p.add_argument('--protocol', default=None, help='evaluation sets of this protocol version '
                   '(default: the current one)')
    p.add_argument('--quiet', action='store_true', help='tool output to log files')
    return p.parse_args(argv)


def _epoch_options(epochs: Optional[int]) -> List[str]:
    if epochs is None:
        return []
    return [f'train_cfg.max_epochs={epochs}', f'param_scheduler.1.T_max={epochs}',
            f'param_scheduler.1.end={epochs}']


def main(argv=None) -> Dict[str, Dict[str, float]]:
    args = parse_args(argv)
    from pomp_mm.synthetic import protocol
    from pomp_mm.synthetic.datasets import write_eval_sets
    from pomp_mm.synthetic.world_clip import world_clip_weights
    from pomp_mm.synthetic.render import check_seed
    try:
        version = protocol.check_protocol(args.protocol or protocol.PROTOCOL)
        check_seed(args.seed)
        world_clip_weights()  # fail now on a corrupted checkpoint, not after rendering
        if not 1 <= args.coop_classes <= protocol.NUM_COOP:
            raise ValueError(f'--coop-classes must be in 1..{protocol.NUM_COOP}, got '
                             f'{args.coop_classes}')
        classes = protocol.pretrain_classes() if args.classes is None else \
            protocol.subset_classes(args.classes, seed=0)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f'error: {err}')
    start = time.perf_counter()
    work = os.path.abspath(args.work_dir)
    data = os.path.join(work, 'data')
    os.makedirs(data, exist_ok=True)
    eval_root = os.path.join(data, f'eval_{version}')
    sets = args.sets or list(protocol.eval_sets(version))
    try:
        write_eval_sets(eval_root, sets, args.eval_per_class, progress=not args.quiet,
                        version=version)
    except ValueError as err:
        raise SystemExit(f'error: {err}')
    full = 'synthetic-pretrain' if args.classes is None else None
    pomp_data = prepare_set(os.path.join(data, f'pretrain_seed{args.seed}'), classes,
                            args.shots, 1 + args.seed, POMP_CONFIG, full, work, args.quiet)
    coop = protocol.coop_classes()[:args.coop_classes]
    coop_data = prepare_set(os.path.join(data, f'coop_seed{args.seed}'), coop, args.coop_shots,
                            1 + args.seed, COOP_CONFIG,
                            'synthetic-1k' if args.coop_classes == protocol.NUM_COOP else None,
                            work, args.quiet)
    opts = _epoch_options(args.epochs)
    train_prompt(POMP_CONFIG, os.path.join(work, 'pomp'), pomp_data, args.seed, opts,
                 args.quiet)
    train_prompt(COOP_CONFIG, os.path.join(work, 'coop-1k'), coop_data, args.seed, opts,
                 args.quiet)
    prompts = {'coop-1k': os.path.join(work, 'coop-1k', 'prompt_latest.pth'),
               'pomp': os.path.join(work, 'pomp', 'prompt_latest.pth')}
    results = evaluate(prompts, eval_root, sets, os.path.join(work, 'eval'), args.quiet)
    summary = summarise(results, version)
    report = intervals_report(per_class(prompts, os.path.join(work, 'eval')), summary, version,
                              os.path.join(work, 'results.png'),
                              f'Synthetic world (protocol {version}), seed {args.seed}: top-1 % '
                              'with 95 % class-bootstrap intervals')
    with open(os.path.join(work, 'results.json'), 'w', encoding='utf-8') as f:
        json.dump({'protocol': version, 'seed': args.seed, 'methods': summary, **report['json']},
                  f, indent=1)
    table = format_table(summary, f'Synthetic world (protocol {version}), seed {args.seed}: '
                         'top-1 % (mean: cross-dataset sets; domain_mean: sketch + noisy)')
    table += '\n\nDifferences, paired 95 % class-bootstrap intervals:\n\n' + report['table']
    with open(os.path.join(work, 'results.md'), 'w', encoding='utf-8') as f:
        f.write(table + '\n')
    print('\n' + table)
    print(f'wrote {os.path.join(work, "results.png")}')
    print(f'\nwrote {os.path.join(work, "results.json")} ({time.perf_counter() - start:.0f} s)')
    return summary


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
