"""Private: the measurement helpers shared by the benchmark scripts in ``tools/``.

Each benchmark case runs in a fresh process (:func:`run_case`) so its peak memory is its own:
CUDA max allocated on a GPU; on CPU the peak resident set (VmHWM), reset right before the
measured work.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch

__all__ = ['paired_times', 'peak_memory_mb', 'reset_peak_memory', 'run_case']


def _status_mb(field: str) -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def peak_memory_mb(device: str) -> float:
    """Peak memory since the last :func:`reset_peak_memory` (MB)."""
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        return _status_mb('VmHWM')
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory(device: str) -> float:
    """Reset the peak counter; returns the current usage (MB) to subtract from the peak."""
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    try:  # Linux: writing 5 to clear_refs resets VmHWM to the current RSS
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return _status_mb('VmRSS')
    except (OSError, KeyError):
        return peak_memory_mb(device)


def run_case(script: str, case: Dict[str, Any]) -> Dict[str, Any]:
    """Run ``script --worker JSON`` in a fresh process; its last stdout line is the result."""
    env = dict(os.environ)
    if not case.get('device', 'cpu').startswith('cuda'):
        # glibc keeps freed heap memory and raises its mmap threshold as it goes, so the peak
        # RSS would depend on fragmentation (+-10% between identical cases); a fixed threshold
        # maps every large tensor separately and unmaps it when freed, so the peak RSS follows
        # the peak of live tensors, as CUDA max allocated does
        env.setdefault('MALLOC_MMAP_THRESHOLD_', '65536')
    res = subprocess.run([sys.executable, os.path.abspath(script), '--worker', json.dumps(case)],
                         stdout=subprocess.PIPE, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f'benchmark case {case} failed (exit {res.returncode}); see its '
                           'stderr above')
    return json.loads(res.stdout.strip().splitlines()[-1])


def paired_times(cases: Dict[str, Callable[[Any], float]], inputs: Sequence[Any],
                 rounds: int) -> Tuple[Dict[str, List[float]], List[float]]:
    """Time two cases on the same inputs, back to back, in alternating order.

    Each input runs through both cases one right after the other, the order flipping every
    call, so slow drift of the machine's speed (shared cores) cancels in each pair's ratio.

    Args:
        cases: Two ``name -> fn(input) -> milliseconds``; the first is the numerator.
        inputs: What each call gets.
        rounds: Passes over ``inputs``.

    Returns:
        The times per case and the per-pair ratios (first / second).
    """
    names = list(cases)
    if len(names) != 2:
        raise ValueError(f'paired_times compares two cases, got {names}')
    times: Dict[str, List[float]] = {name: [] for name in names}
    ratios: List[float] = []
    for r in range(rounds):
        for i, item in enumerate(inputs):
            order = names if (r + i) % 2 == 0 else names[::-1]
            pair = {name: cases[name](item) for name in order}
            for name in names:
                times[name].append(pair[name])
            ratios.append(pair[names[0]] / pair[names[1]])
    return times, ratios
