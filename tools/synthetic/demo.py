"""make demo: POMP end to end in the synthetic world, through the real tools, offline.

Renders the few-shot pre-training set over the 23,900 pre-training classes, the CoOp baseline's
1,000-class set and the downstream sets; caches image features (tools/cache_features.py);
pre-trains a POMP prompt (configs/pretrain/pomp_synthetic_cached.py) and a CoOp-style prompt
with a full softmax over 1,000 classes (coop_synthetic-1k_cached.py) with tools/pretrain.py;
evaluates hand prompt, template ensemble, CoOp-1K and POMP with tools/eval_classification.py;
prints the table and writes work_dir/results.json (top-1 % per method and set, paired
intervals of the differences), results.md and results.png.

    python tools/synthetic/demo.py                      # the full demo (protocol v3 sets)
    python tools/synthetic/demo.py --classes 300 --coop-classes 50 --epochs 1 --eval-per-class 1

The console shows one progress bar per stage (render, cache features, pre-train POMP,
pre-train CoOp-1K, evaluate), the table and each stage's time; the tools' output goes to
work_dir/logs/ (``--verbose``: to the console).
"""
from __future__ import annotations

import argparse
import os
from typing import Dict

from pomp_mm.fileio import atomic_write_json
from pomp_mm.synthetic import experiments as exp


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
    from pomp_mm.synthetic.world_clip import WORLD_MODELS
    p.add_argument('--world-clip', default=None, choices=WORLD_MODELS,
                   help='committed world CLIP to use (default: the current one, '
                   'pomp-world-CNN-T; pomp-world-CNN-T-v4: world v4)')
    p.add_argument('--verbose', action='store_true', help="the tools' output on the console "
                   '(default: one progress bar per stage; the output in work_dir/logs/)')
    return p.parse_args(argv)


def main(argv=None) -> Dict[str, Dict[str, float]]:
    try:
        return _demo(parse_args(argv))
    except exp.ToolError as err:
        raise SystemExit(f'make demo: {err}') from None


def _demo(args: argparse.Namespace) -> Dict[str, Dict[str, float]]:
    from pomp_mm.synthetic import protocol
    from pomp_mm.synthetic.datasets import write_eval_sets
    from pomp_mm.synthetic.render import check_seed
    from pomp_mm.synthetic.world_clip import MODEL_NAME, world_clip_weights
    version = protocol.check_protocol(args.protocol or protocol.PROTOCOL)
    check_seed(args.seed)
    clip_opts = exp.clip_options(args.world_clip)  # fail now on a corrupted checkpoint,
    world_clip_weights()  # not after rendering
    if not 1 <= args.coop_classes <= protocol.NUM_COOP:
        raise ValueError(f'--coop-classes must be in 1..{protocol.NUM_COOP}, got '
                         f'{args.coop_classes}')
    classes = protocol.pretrain_classes() if args.classes is None else \
        protocol.subset_classes(args.classes, seed=0)
    coop = protocol.coop_classes()[:args.coop_classes]
    sets = args.sets or list(protocol.eval_sets(version))
    work = os.path.abspath(args.work_dir)
    data, eval_dir = os.path.join(work, 'data'), os.path.join(work, 'eval')
    eval_root = os.path.join(data, f'eval_{version}')
    stages = exp.Stages(os.path.join(work, 'logs'), args.verbose)
    verbose = args.verbose
    # the prompts' pre-training sets: (method, folder, classes, shots, config, vocabulary)
    runs = [('pomp', os.path.join(data, f'pretrain_seed{args.seed}'), classes, args.shots,
             exp.POMP_CONFIG, 'synthetic-pretrain' if args.classes is None else None),
            ('coop-1k', os.path.join(data, f'coop_seed{args.seed}'), coop, args.coop_shots,
             exp.COOP_CONFIG, 'synthetic-1k' if args.coop_classes == protocol.NUM_COOP
             else None)]
    print(f'make demo: POMP vs CoOp-1K, hand prompt and template ensemble in the synthetic '
          f'world (protocol {version}, seed {args.seed}); logs in {stages.log_dir}')
    with stages.stage('render', total=len(sets) + len(runs), unit='set') as bar:
        for name in sets:
            write_eval_sets(eval_root, [name], args.eval_per_class, progress=verbose,
                            version=version)
            bar.update(1)
        csvs = {}
        for method, folder, cls, shots, _, _ in runs:
            csvs[method] = exp.render_set(folder, cls, shots, 1 + args.seed, progress=verbose)
            bar.update(1)
    train_data = {}
    with stages.stage('cache features', total=len(runs), unit='set') as bar:
        for method, folder, cls, _, config, vocab in runs:
            train_data[method] = exp.cache_set(csvs[method], cls, config, vocab,
                                               stages.log(f'cache_{method}'), args.world_clip)
            bar.update(1)
    opts = exp.epoch_options(args.epochs)
    prompts = {}
    for method, _, _, _, config, _ in runs:
        run_dir = os.path.join(work, method)
        label = {'pomp': 'pre-train POMP', 'coop-1k': 'pre-train CoOp-1K'}[method]
        with stages.stage(label, unit='it') as bar:
            exp.train_prompt(config, run_dir, train_data[method], args.seed, opts + clip_opts,
                             log=stages.log(f'pretrain_{method}'),
                             watch=exp.training_progress(bar))
        prompts[method] = os.path.join(run_dir, 'prompt_latest.pth')
    prompts = {m: prompts[m] for m in ('coop-1k', 'pomp')}  # the table's row order
    with stages.stage('evaluate', total=1, unit='run'):
        results = exp.evaluate(prompts, eval_root, sets, eval_dir, log=stages.log('evaluate'),
                               model_name=args.world_clip)
    summary = exp.summarise(results, version)
    clip_name = args.world_clip or MODEL_NAME
    title = f'Synthetic world (protocol {version}, {clip_name}), seed {args.seed}'
    report = exp.intervals_report(exp.per_class(prompts, eval_dir), summary, version,
                                  os.path.join(work, 'results.png'),
                                  f'{title}: top-1 % with 95 % class-bootstrap intervals')
    atomic_write_json(os.path.join(work, 'results.json'),
                      {'protocol': version, 'seed': args.seed, 'world_clip': clip_name,
                       'methods': summary,
                       'stage_seconds': stages.times, **report['json']})
    table = exp.format_results(summary, f'{title}: top-1 % (mean: cross-dataset sets; '
                               'domain_mean: sketch + noisy)')
    table += '\n\nDifferences, paired 95 % class-bootstrap intervals:\n\n' + report['table']
    with open(os.path.join(work, 'results.md'), 'w', encoding='utf-8') as f:
        f.write(table + '\n')
    print('\n' + table + '\n\nStage times:\n' + '\n'.join(stages.summary()))
    print(f'\nlogs:    {stages.log_dir}\nresults: {os.path.join(work, "results.json")}, '
          f'results.md\npicture: {os.path.join(work, "results.png")}')
    return summary


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
