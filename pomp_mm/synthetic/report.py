"""Reporting the world's prompt comparisons: paired intervals over set groups, and a plot.

Per-class accuracies come from ``tools/eval_classification.py --json`` (``per_class``); a
method trained over several seeds has one row per seed.
"""
from __future__ import annotations

import statistics
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..evaluation.intervals import Interval, paired_bootstrap
from .protocol import CROSS_DOMAIN_SETS, PROTOCOL, SOURCE_SET, cross_dataset_sets

__all__ = ['PAIRS', 'set_groups', 'pair_intervals', 'accuracy_intervals', 'plot_accuracies',
           'format_intervals', 'mean_sd', 'markdown_table']

#: The differences every report gives: (method, baseline).
PAIRS: Tuple[Tuple[str, str], ...] = (('pomp', 'hand'), ('pomp', 'coop-1k'),
                                      ('coop-1k', 'hand'), ('pomp', 'ensemble'))
PerClass = Mapping[str, Mapping[str, Sequence]]  # {method: {set: [classes] or [seeds, classes]}}


def set_groups(sets: Iterable[str], version: str = PROTOCOL) -> Dict[str, List[str]]:
    """``{'mean': cross-dataset sets, 'domain_mean': shifted domains, 'source': [photo],
    <set>: [set]}`` restricted to ``sets`` (a group with none of them is left out)."""
    sets = list(sets)
    groups = {'mean': [s for s in cross_dataset_sets(version) if s in sets],
              'domain_mean': [s for s in CROSS_DOMAIN_SETS if s in sets],
              'source': [s for s in (SOURCE_SET,) if s in sets]}
    groups.update({s: [s] for s in sets})
    return {k: v for k, v in groups.items() if v}


def pair_intervals(per_class: PerClass, pairs: Sequence[Tuple[str, str]] = PAIRS,
                   version: str = PROTOCOL, num_boot: int = 2000,
                   seed: int = 0) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{'pomp - hand': {group: interval dict}}`` for each pair whose methods both exist."""
    out = {}
    for a, b in pairs:
        if a not in per_class or b not in per_class:
            continue
        common = [s for s in per_class[a] if s in per_class[b]]
        out[f'{a} - {b}'] = {
            group: paired_bootstrap({s: per_class[a][s] for s in members},
                                    {s: per_class[b][s] for s in members},
                                    num_boot, seed=seed).as_dict()
            for group, members in set_groups(common, version).items()}
    return out


def accuracy_intervals(per_class: PerClass, num_boot: int = 2000,
                       seed: int = 0) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{method: {set: interval dict}}`` of each method's accuracy (class bootstrap, and
    seeds where there are several)."""
    out = {}
    for method, sets in per_class.items():
        out[method] = {}
        for name, values in sets.items():
            zeros = np.zeros(np.shape(values)[-1])
            out[method][name] = paired_bootstrap({name: values}, {name: zeros}, num_boot,
                                                 seed=seed).as_dict()
    return out


def format_intervals(intervals: Mapping[str, Mapping[str, Mapping[str, float]]],
                     groups: Sequence[str]) -> str:
    """A markdown table: one row per difference, ``estimate [low, high]`` per group."""
    lines = ['| difference | ' + ' | '.join(groups) + ' |', '|---|' + '---:|' * len(groups)]
    for pair, by_group in intervals.items():
        cells = []
        for g in groups:
            iv = by_group.get(g)
            cells.append(str(Interval(iv['estimate'], iv['low'], iv['high'], iv['level']))
                         if iv else '-')
        lines.append(f'| {pair} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot_accuracies(acc: Mapping[str, Mapping[str, Mapping[str, float]]], path: str,
                    title: str = '', chance: Optional[Mapping[str, float]] = None) -> str:
    """Grouped bars of top-1 % per set and method with their 95 % interval; saves a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    methods = list(acc)
    sets = list(next(iter(acc.values())))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(sets)), 3.6), dpi=110)
    x = np.arange(len(sets))
    for i, m in enumerate(methods):
        est = np.array([acc[m][s]['estimate'] for s in sets])
        err = np.array([[acc[m][s]['estimate'] - acc[m][s]['low'] for s in sets],
                        [acc[m][s]['high'] - acc[m][s]['estimate'] for s in sets]])
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, est, width, yerr=err, capsize=2,
               label=m)
    if chance:
        ax.scatter(x, [chance.get(s, np.nan) for s in sets], marker='_', s=200, c='k',
                   label='chance', zorder=3)
    ax.set_xticks(x, [s.replace('-', '-\n', 1) for s in sets], fontsize=7)
    ax.set_ylabel('top-1 %')
    ax.set_ylim(0, 100)
    # above the axes: bars near 100 % leave no room for it inside
    ax.legend(fontsize=7, ncol=len(methods) + 1, loc='lower center', bbox_to_anchor=(0.5, 1.0),
              frameon=False)
    ax.set_title(title, fontsize=8, pad=18)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def mean_sd(values: Sequence[float], digits: int = 1) -> str:
    """``"mean ± sd"`` over seeds; one value as it is, none as ``-``."""
    if not values:
        return '-'
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    return f'{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}'


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    """The lines of a markdown table: first column left-aligned, the others right-aligned."""
    lines = ['| ' + ' | '.join(header) + ' |', '|---|' + '---:|' * (len(header) - 1)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f'a row of {len(row)} cells in a table of {len(header)} '
                             f'columns: {list(row)}')
        lines.append('| ' + ' | '.join(str(c) for c in row) + ' |')
    return lines
