"""World v4's long-tail predictions on a make demo run: does the hand prompt's per-class accuracy
follow how often caption stream v4 names a class's values, and does POMP gain more on the rare
half? (Registered in docs/synthetic_world.md, "World v4".)

    python tools/synthetic/demo.py --world-clip pomp-world-CNN-T-v4 --work-dir work_dirs/demo_v4
    python tools/synthetic/tail.py --work-dir work_dirs/demo_v4

Writes work_dir/tail.json and prints the table.
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Dict

from pomp_mm.fileio import atomic_write_json
from pomp_mm.synthetic import experiments as exp
from pomp_mm.synthetic.long_tail import tail_report
from pomp_mm.synthetic.report import markdown_table


def _interval(d: Dict[str, float]) -> str:
    return f'{d["estimate"]:+.1f} [{d["low"]:+.1f}, {d["high"]:+.1f}]'


def format_report(report: Dict) -> str:
    name = f'{report["method"]} - {report["baseline"]}'
    rows = []
    for r in report['sets']:
        rho = r['spearman']
        rows.append([r['set'], 'n/a' if math.isnan(rho) else f'{rho:+.2f}'] +
                    [f'{r[k]:+.1f}' if k in r else '-' for k in ('head_gain', 'tail_gain')])
    lines = markdown_table(['set', f'Spearman({report["baseline"]} accuracy, frequency)',
                            f'{name}, frequent half', f'{name}, rare half'], rows)
    lines += ['', f'{name}, pooled over the sets (paired 95 % intervals): frequent half ' +
              ', rare half '.join(_interval(report['pooled'][h])
                                  for h in ('head', 'tail') if h in report['pooled'])]
    return '\n'.join(lines)


def main(argv=None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--work-dir', default='work_dirs/demo_v4', help='a make demo folder')
    p.add_argument('--protocol', default='v3')
    args = p.parse_args(argv)
    work = os.path.abspath(args.work_dir)  # the demo records absolute prompt paths
    prompts = {m: os.path.join(work, m, 'prompt_latest.pth') for m in ('coop-1k', 'pomp')}
    eval_dir = os.path.join(args.work_dir, 'eval')
    if not os.path.isfile(os.path.join(eval_dir, 'eval.json')):
        raise SystemExit(f'no make demo results under {args.work_dir} (eval/eval.json)')
    report = tail_report(exp.per_class(prompts, eval_dir), args.protocol)
    atomic_write_json(os.path.join(args.work_dir, 'tail.json'), report)
    print(format_report(report))
    return report


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
