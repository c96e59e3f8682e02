"""The paper's claims in miniature, in the synthetic world, over several seeds.

Every run goes through the real tools (tools/cache_features.py, tools/pretrain.py,
tools/eval_classification.py) on the committed world CLIP; a seed changes the pre-training
images and the prompt's training randomness, never the CLIP or the evaluation sets.

1. POMP vs hand prompt, template ensemble and CoOp-1K: cross-dataset and cross-domain means.
2. K-of-N sampling with the ln correction vs a full softmax over all N classes. Accuracy at
   N = 2,000 (K = 100, the paper's K/N of about 1/20; 12 shots per class), with the training
   processes' time per iteration and peak memory; and the step cost at N = 23,900 (K = 1,000 vs
   full softmax) from tools/benchmarks/pretrain.py, side by side in one run. (Training a full
   softmax over 23,900 classes takes ~8 s per iteration here: an hour per seed.)
3. Local correction ln vs log10 vs none, and the softmax rows: shared (every image against the
   step's classes) vs per_image (the official step: [own class, K - 1 negatives]).
4. Transfer vs number of pre-training classes (100 / 1,000 / 23,900), at the same number of
   iterations (shots per class min(64, ceil(23,900 / C)), epochs scaled to match).

    python tools/synthetic/claims.py                 # 3 seeds, ~1 h on 2 cores; resumable
    python tools/synthetic/claims.py --quick         # one seed, 1 epoch, small sets

Writes work_dir/claims.json (every run's numbers, per-class accuracies and the paired
intervals), claims.md (the tables) and claims.png.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
from typing import Dict, List

from pomp_mm.synthetic import experiments as exp
from pomp_mm.synthetic.report import markdown_table, mean_sd

BASE_EPOCHS = 3
BATCH = 256


class Claims:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = os.path.abspath(args.work_dir)
        self.path = os.path.join(self.work, 'claims.json')
        self._sets: Dict[tuple, Dict] = {}  # prepared sets, shared by the runs that train on them
        self.state: Dict = exp.load_state(self.path, {'runs': {}})
        from pomp_mm.synthetic.world_clip import read_card
        sha = read_card()['sha256']
        had = self.state.get('clip_sha256')
        if self.state['runs'] and had != sha:
            # resuming would mix runs of two CLIPs in one table
            raise ValueError(f'{self.path} holds runs of another world CLIP (sha256 '
                             f'{had or "not recorded"}, now {sha}): use another --work-dir, or '
                             'move that folder away to start over')
        self.state['clip_sha256'] = sha

    def save(self) -> None:
        exp.save_state(self.path, self.state)

    def data(self, seed: int, kind: str, classes: int) -> Dict[str, str]:
        """The rendered, feature-cached set of (seed, kind, classes), prepared once."""
        key = (seed, kind, classes)
        if key not in self._sets:
            self._sets[key] = self._prepare(seed, kind, classes)
        return self._sets[key]

    def _prepare(self, seed: int, kind: str, classes: int) -> Dict[str, str]:
        from pomp_mm.synthetic import protocol
        if kind == 'coop':
            cls = protocol.coop_classes()[:self.args.coop_classes]
            shots, config = self.args.coop_shots, exp.COOP_CONFIG
            vocab = 'synthetic-1k' if len(cls) == protocol.NUM_COOP else None
        else:
            full = classes >= len(protocol.pretrain_classes())
            cls = protocol.pretrain_classes() if full else protocol.subset_classes(classes)
            shots = min(64, math.ceil(self.args.classes / len(cls)) * self.args.shots)
            config, vocab = exp.POMP_CONFIG, ('synthetic-pretrain' if full else None)
        out = os.path.join(self.work, 'data', f'{kind}{classes}_seed{seed}')
        d = exp.prepare_set(out, cls, shots, 1 + seed, config, vocab, self.work, True)
        d['images'] = len(cls) * shots
        return d

    def run(self, name: str, seed: int, kind: str, classes: int, options=()) -> Dict:
        key = f'{name}/seed{seed}'
        if key in self.state['runs']:
            return self.state['runs'][key]
        data = self.data(seed, kind, classes)
        # the same number of iterations as the main run, whatever the set's size
        epochs = self.args.epochs
        main_images = self.args.classes * self.args.shots
        if kind != 'coop' and data['images'] != main_images:
            epochs = max(1, round(epochs * main_images / data['images']))
        work_dir = os.path.join(self.work, 'runs', name, f'seed{seed}')
        config = exp.COOP_CONFIG if kind == 'coop' else exp.POMP_CONFIG
        print(f'[claims] training {key} ({data["images"]} images, {epochs} epochs)', flush=True)
        stats = exp.train_prompt(config, work_dir, data, seed,
                                  exp.epoch_options(epochs) + list(options), quiet=True)
        stats['iter_seconds'] = exp.iter_time(work_dir)
        stats['epochs'] = epochs
        stats['prompt'] = os.path.join(work_dir, 'prompt_latest.pth')
        self.state['runs'][key] = stats
        self.save()
        return stats

    def evaluate(self, seed: int) -> None:
        key = f'seed{seed}'
        runs = {k.split('/')[0]: v for k, v in self.state['runs'].items()
                if k.endswith(f'/seed{seed}')}
        done = self.state.setdefault('eval', {}).get(key, {})
        # hand and ensemble do not depend on the seed (fixed CLIP and sets): evaluated once
        baselines = next((e for e in self.state['eval'].values() if 'ensemble' in e), None)
        if baselines and 'ensemble' not in done:
            done.update({m: baselines[m] for m in ('hand', 'ensemble', 'chance')})
        todo = {n: r['prompt'] for n, r in runs.items() if n not in done}
        if not todo:
            self.state['eval'][key] = done
            self.save()
            return
        from pomp_mm.synthetic import protocol
        sets = list(protocol.eval_sets())
        out = os.path.join(self.work, f'eval_{protocol.PROTOCOL}', key)
        os.makedirs(out, exist_ok=True)
        res = exp.evaluate(todo, self.eval_root, sets, out, quiet=True,
                            ensemble='ensemble' not in done)
        done.update(exp.summarise(res))
        self.state.setdefault('per_class', {}).setdefault(key, {}).update(
            exp.per_class(todo, out))
        self.state['eval'][key] = done
        self.save()

    def main(self) -> str:
        from pomp_mm.synthetic import protocol
        from pomp_mm.synthetic.datasets import write_eval_sets
        self.eval_root = os.path.join(self.work, 'data', f'eval_{protocol.PROTOCOL}')
        write_eval_sets(self.eval_root, list(protocol.eval_sets()), self.args.eval_per_class,
                        progress=False)
        n = self.args.classes
        for seed in self.args.seeds:
            self.run('pomp', seed, 'pomp', n)
            self.run('coop-1k', seed, 'coop', n)
            if not self.args.skip_full:
                m = self.args.softmax_classes
                self.run(f'sampled-{m}', seed, 'pomp', m,
                         [f'model.num_sampled={self.args.softmax_k}'])
                self.run(f'full-{m}', seed, 'pomp', m,
                         ['model.num_sampled=None', 'model.correction=none'])
            self.run('pomp-log10', seed, 'pomp', n, ['model.correction=log10'])
            self.run('pomp-none', seed, 'pomp', n, ['model.correction=none'])
            self.run('pomp-per-image', seed, 'pomp', n, ['model.contrast=per_image'])
            for c in self.args.class_counts:
                if c < n:
                    self.run(f'pomp-{c}cls', seed, 'pomp', c)
            self.evaluate(seed)
        if not self.args.skip_full and 'benchmark' not in self.state:
            self.benchmark()
        return self.report()

    def benchmark(self) -> None:
        """Step time and memory of K = 1,000 vs full softmax at the full N, one run."""
        from pomp_mm.synthetic.world_clip import MODEL_NAME
        cmd = [sys.executable, exp.tool_path('benchmarks/pretrain.py'), '--model',
               MODEL_NAME, '--vocabulary', 'synthetic-pretrain', '--num-classes',
               str(self.args.classes), '--ks', '1000', '--n-ctx', '4', '--batch-size',
               str(BATCH), '--views', '1', '--skip-large-vocab', '--steps', '2']
        print('[claims] benchmark: ' + ' '.join(cmd[1:]), flush=True)
        out = subprocess.run(cmd, cwd=exp.REPO_ROOT, stdout=subprocess.PIPE, text=True, check=True)
        self.state['benchmark'] = {'command': ' '.join(cmd[1:]), 'output': out.stdout}
        self.save()

    def _metric(self, method: str, metric: str) -> List[float]:
        vals = []
        for seed in self.args.seeds:
            row = self.state.get('eval', {}).get(f'seed{seed}', {}).get(method)
            if row and metric in row:
                vals.append(row[metric])
        return vals

    def stacked_per_class(self) -> Dict[str, Dict[str, List[List[float]]]]:
        """``{method: {set: [seeds, classes]}}`` over the seeds evaluated; a seed-independent
        method (hand, ensemble) has one row."""
        out: Dict[str, Dict[str, List[List[float]]]] = {}
        for seed in self.args.seeds:
            for method, sets in self.state.get('per_class', {}).get(f'seed{seed}', {}).items():
                rows = out.setdefault(method, {})
                for name, values in sets.items():
                    rows.setdefault(name, []).append(values)
        return out

    def intervals(self) -> str:
        """Paired intervals (classes and seeds resampled) of the claims' differences; plot."""
        from pomp_mm.synthetic import report
        m = self.args.softmax_classes
        pairs = list(report.PAIRS) + [(f'sampled-{m}', f'full-{m}'), ('pomp', 'pomp-log10'),
                                      ('pomp', 'pomp-none'), ('pomp', 'pomp-per-image')]
        stacked = self.stacked_per_class()
        if not stacked:
            return ''
        diffs = report.pair_intervals(stacked, pairs)
        self.state['differences'] = diffs
        main = {k: v for k, v in stacked.items() if k in ('hand', 'ensemble', 'coop-1k', 'pomp')}
        if main:
            report.plot_accuracies(report.accuracy_intervals(main),
                                   os.path.join(self.work, 'claims.png'),
                                   f'Synthetic world, seeds {self.args.seeds}: top-1 % with 95 % '
                                   'intervals (classes and seeds resampled)')
        self.save()
        return report.format_intervals(diffs, ['mean', 'domain_mean', 'source', 'shapes'])

    def _accuracy_rows(self, runs, columns=('mean', 'domain_mean', 'domain-photo')):
        return [[label] + [mean_sd(self._metric(name, c)) for c in columns]
                for name, label in runs]

    def report(self) -> str:
        from pomp_mm.synthetic import protocol
        seeds = self.args.seeds
        lines = [f'Synthetic world (protocol {protocol.PROTOCOL}), seeds '
                 f'{", ".join(map(str, seeds))}: top-1 %, mean ± sd over seeds. mean: '
                 f'cross-dataset sets ({", ".join(protocol.cross_dataset_sets())}); domain: '
                 'sketch + noisy; source: domain-photo.', '', '**1. Prompts**', '']
        lines += markdown_table(['method', 'mean', 'domain', 'source'], self._accuracy_rows(
            [(m, m) for m in ('chance', 'hand', 'ensemble', 'coop-1k', 'pomp')]))
        runs = self.state['runs']

        def stat(name: str, key: str) -> List[float]:
            return [runs[f'{name}/seed{s}'][key] for s in seeds
                    if f'{name}/seed{s}' in runs and runs[f'{name}/seed{s}'].get(key)]

        def ratio(values: List[float], base: List[float]) -> str:
            return f'{statistics.mean(values) / statistics.mean(base):.2f}' \
                if values and base else '-'

        m, k = self.args.softmax_classes, self.args.softmax_k
        lines += ['', f'**2. K-of-N vs full softmax** (N = {m:,} pre-training classes; time '
                  'per iteration and peak RSS of the training processes, same machine, same '
                  'data)', '']
        base_t, base_m = stat(f'full-{m}', 'iter_seconds'), stat(f'full-{m}', 'peak_rss_mb')
        rows = []
        for name, label in ((f'full-{m}', 'full softmax'), (f'sampled-{m}', f'K={k}, ln')):
            t, mem = stat(name, 'iter_seconds'), stat(name, 'peak_rss_mb')
            rows.append([label, mean_sd(self._metric(name, 'mean')),
                         mean_sd(self._metric(name, 'domain_mean')),
                         f'{statistics.mean(t):.3f}' if t else '-',
                         f'{statistics.mean(mem):.0f}' if mem else '-',
                         ratio(t, base_t), ratio(mem, base_m)])
        lines += markdown_table(['loss', 'mean', 'domain', 's / iter', 'peak RSS (MB)',
                                 'time ratio', 'mem ratio'], rows)
        if 'benchmark' in self.state:
            lines += ['', f'Step cost at N = {self.args.classes:,} (`' +
                      self.state['benchmark']['command'] + '`, random weights of the same '
                      'architecture):', '', self.state['benchmark']['output'].strip()]
        lines += ['', '**3. Local correction**', '']
        lines += markdown_table(['correction', 'mean', 'domain', 'source'], self._accuracy_rows(
            [('pomp', 'ln'), ('pomp-log10', 'log10'), ('pomp-none', 'none')]))
        lines += ['', 'Softmax rows (both with the ln correction):', '']
        lines += markdown_table(['contrast', 'mean', 'domain', 'source'], self._accuracy_rows(
            [('pomp', 'shared (ours)'), ('pomp-per-image', 'per_image (official)')]))
        lines += ['', '**4. Pre-training classes**', '']
        counts = sorted(set(self.args.class_counts) | {self.args.classes})
        lines += markdown_table(['classes', 'mean', 'domain'], self._accuracy_rows(
            [('pomp' if c >= self.args.classes else f'pomp-{c}cls', f'{c:,}') for c in counts],
            ('mean', 'domain_mean')))
        paired = self.intervals()
        if paired:
            lines += ['', '**Differences, paired 95 % intervals** (2,000 bootstrap replicates; '
                      'classes resampled in every set, and seeds of the seeded methods)', '',
                      paired]
        table = '\n'.join(lines)
        with open(os.path.join(self.work, 'claims.md'), 'w', encoding='utf-8') as f:
            f.write(table + '\n')
        return table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--work-dir', default='work_dirs/claims')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--classes', type=int, default=23900, help='N of the main runs')
    p.add_argument('--shots', type=int, default=1)
    p.add_argument('--class-counts', type=int, nargs='*', default=[100, 1000])
    p.add_argument('--coop-classes', type=int, default=1000)
    p.add_argument('--coop-shots', type=int, default=16)
    p.add_argument('--epochs', type=int, default=BASE_EPOCHS)
    p.add_argument('--eval-per-class', type=int, default=None)
    p.add_argument('--skip-full', action='store_true', help='leave out the full-softmax runs')
    p.add_argument('--softmax-classes', type=int, default=2000,
                   help='N of the sampled vs full softmax accuracy runs')
    p.add_argument('--softmax-k', type=int, default=100, help='K of the sampled run')
    p.add_argument('--quick', action='store_true',
                   help='one seed, 1 epoch, 2,000 classes, CoOp on 200: a smoke run')
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.classes = args.seeds[:1], 1, 2000
        args.coop_classes, args.coop_shots, args.eval_per_class = 200, 4, 1
        args.class_counts, args.softmax_classes, args.softmax_k = [100], 500, 50
    return args


def main(argv=None) -> str:
    try:
        table = Claims(parse_args(argv)).main()
    except exp.ToolError as err:
        raise SystemExit(f'claims: {err}') from None
    print(table)
    return table


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
