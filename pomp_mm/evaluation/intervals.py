"""Paired bootstrap intervals for differences of zero-shot accuracy between two methods.

Two methods scored on the same images differ by much less than either varies with the draw of
classes, so the interval of a difference must resample the *pairs*: the same classes (and
seeds) for both. :func:`paired_bootstrap` resamples classes within each set, and the seeds of
each method where there are several, and recomputes the mean over sets of the accuracy
difference (every class of a set has the same number of images, so a set's accuracy is the
mean of its per-class accuracies).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Sequence, Union

import numpy as np

__all__ = ['Interval', 'paired_bootstrap', 'per_class_accuracy']

ArrayLike = Union[Sequence[float], Sequence[Sequence[float]], np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval (points of top-1 %)."""

    estimate: float
    low: float
    high: float
    level: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_dict(self) -> Dict[str, float]:
        return {**asdict(self), 'half_width': self.half_width}

    def __str__(self) -> str:
        return f'{self.estimate:+.1f} [{self.low:+.1f}, {self.high:+.1f}]'


def per_class_accuracy(predictions: Sequence[int], labels: Sequence[int],
                       num_classes: int) -> np.ndarray:
    """Top-1 % of each class; a class without images is NaN."""
    pred, lab = np.asarray(predictions), np.asarray(labels)
    if pred.shape != lab.shape:
        raise ValueError(f'{pred.shape[0]} predictions for {lab.shape[0]} labels')
    if lab.size and not 0 <= lab.min() <= lab.max() < num_classes:
        raise ValueError(f'labels must be in 0..{num_classes - 1}, got {lab.min()}..{lab.max()}')
    total = np.bincount(lab, minlength=num_classes).astype(np.float64)
    correct = np.bincount(lab[pred == lab], minlength=num_classes)
    with np.errstate(invalid='ignore', divide='ignore'):
        return 100.0 * correct / total


def _as_seeds(name: str, values: ArrayLike) -> np.ndarray:
    """[seeds, classes] from a per-class vector (one seed) or a matrix."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] == 0 or a.shape[0] == 0:
        raise ValueError(f'{name}: per-class accuracies must be [classes] or [seeds, classes], '
                         f'got shape {a.shape}')
    if np.isnan(a).any():
        raise ValueError(f'{name}: per-class accuracies contain NaN (a class without images)')
    return a


def paired_bootstrap(a: Mapping[str, ArrayLike], b: Mapping[str, ArrayLike],
                     num_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Interval of ``mean over sets (accuracy of a - accuracy of b)``.

    Args:
        a, b: ``{set: per-class top-1 %}``, each ``[classes]`` or ``[seeds, classes]`` (a
            deterministic method such as the hand prompt has one seed); both name the same
            sets with the same classes in the same order.
        num_boot: Bootstrap replicates.
        level: Coverage of the percentile interval.
        seed: Seed of the resampling (the interval is reproducible).

    Returns:
        The difference on the data and its interval. Each replicate draws, per set, the
        classes with replacement (the same draw for ``a`` and ``b``) and, per method, its
        seeds with replacement.
    """
    if set(a) != set(b) or not a:
        raise ValueError(f'both methods must name the same non-empty sets, got {sorted(a)} '
                         f'and {sorted(b)}')
    if not 0 < level < 1:
        raise ValueError(f'level must be in (0, 1), got {level!r}')
    if num_boot < 1:
        raise ValueError(f'num_boot must be >= 1, got {num_boot!r}')
    rng = np.random.default_rng(seed)
    estimate, boots = 0.0, np.zeros(num_boot)
    for name in sorted(a):
        xa, xb = _as_seeds(f'{name} (a)', a[name]), _as_seeds(f'{name} (b)', b[name])
        if xa.shape[1] != xb.shape[1]:
            raise ValueError(f'{name}: {xa.shape[1]} classes for a, {xb.shape[1]} for b')
        estimate += xa.mean() - xb.mean()
        n = xa.shape[1]
        classes = rng.integers(0, n, size=(num_boot, n))
        for x, sign in ((xa, 1.0), (xb, -1.0)):
            seeds = rng.integers(0, x.shape[0], size=(num_boot, x.shape[0]))
            # mean over drawn seeds of the mean over drawn classes
            per_seed = np.stack([x[:, c].mean(axis=1) for c in classes])  # [boot, seeds]
            boots += sign * np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)
    k = len(a)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boots / k, [tail, 100 - tail])
    return Interval(float(estimate / k), float(low), float(high), level)
