"""World v4's long tail, measured: how often caption stream v4 shows each downstream class,
and whether accuracy and POMP's gain follow it (the predictions registered with world v4)."""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Mapping, Sequence

import numpy as np

from ..evaluation.intervals import paired_bootstrap
from .captions_v4 import class_weights
from .protocol import EvalSet, cross_dataset_sets, eval_sets, pretrain_classes
from .world import ATTRIBUTES

__all__ = ['named_attributes', 'value_frequencies', 'label_frequencies', 'spearman', 'tail_report']

_DRAWS = 16


def named_attributes(eval_set: EvalSet, k: int) -> Dict[str, str]:
    """The attributes label ``k`` fixes (the others are drawn at random per image)."""
    draws = [eval_set.draw(k, np.random.default_rng([k, j])) for j in range(_DRAWS)]
    return {kind: getattr(draws[0], kind) for kind in ATTRIBUTES
            if all(getattr(d, kind) == getattr(draws[0], kind) for d in draws)}


@lru_cache(maxsize=1)
def value_frequencies() -> Dict[str, Dict[str, float]]:
    """``{attribute: {value: probability}}`` that a class drawn by stream v4 has the value."""
    classes = pretrain_classes()
    weights = class_weights(classes)
    out: Dict[str, Dict[str, float]] = {}
    for kind, pool in ATTRIBUTES.items():
        values = np.array([getattr(c, kind) for c in classes])
        out[kind] = {v: float(weights[values == v].sum()) for v in pool}
    return out


def label_frequencies(eval_set: EvalSet) -> np.ndarray:
    """For each label, the product of its named values' stream v4 frequencies (how often the
    text tower saw its words; defined for held-out compositions too)."""
    freq = value_frequencies()
    return np.array([np.prod([freq[kind][v] for kind, v in named_attributes(eval_set, k).items()])
                     for k in range(len(eval_set.classnames))])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind='stable')
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float('nan')
    return float(np.corrcoef(rx, ry)[0, 1])


def tail_report(per_class: Mapping[str, Mapping[str, Sequence]], version: str = 'v3',
                method: str = 'pomp', baseline: str = 'hand',
                num_boot: int = 2000) -> Dict[str, object]:
    """Per cross-dataset set: Spearman of the baseline's per-class accuracy with the label's
    stream frequency, and ``method - baseline`` on the frequent and the rare half of its
    labels (split at the set's median frequency); the halves pooled over the sets with paired
    class-bootstrap intervals (classes and seeds resampled).

    Args:
        per_class: ``{method: {set: [classes] or [seeds, classes]}}`` top-1 %.
    """
    sets = [s for s in cross_dataset_sets(version) if s in per_class[baseline]]
    if not sets or method not in per_class:
        raise ValueError(f'need {method!r} and {baseline!r} per-class accuracies on the '
                         f'cross-dataset sets {cross_dataset_sets(version)}')
    rows: List[Dict[str, object]] = []
    halves: Dict[str, Dict[str, Dict[str, np.ndarray]]] = {'head': {}, 'tail': {}}
    for name in sets:
        freq = label_frequencies(eval_sets(version)[name])
        base = np.atleast_2d(np.asarray(per_class[baseline][name], dtype=float))
        ours = np.atleast_2d(np.asarray(per_class[method][name], dtype=float))
        tail = freq < np.median(freq)
        row: Dict[str, object] = {'set': name, 'spearman': spearman(freq, base.mean(0))}
        for half, mask in (('head', ~tail), ('tail', tail)):
            if not mask.any():  # every label equally frequent (e.g. a set of one attribute)
                continue
            halves[half][name] = {'a': ours[:, mask], 'b': base[:, mask]}
            row[f'{half}_gain'] = float(ours[:, mask].mean() - base[:, mask].mean())
        rows.append(row)
    pooled = {}
    for half, by_set in halves.items():
        if by_set:
            pooled[half] = paired_bootstrap({s: v['a'] for s, v in by_set.items()},
                                            {s: v['b'] for s, v in by_set.items()},
                                            num_boot).as_dict()
    return {'sets': rows, 'pooled': pooled, 'method': method, 'baseline': baseline}
