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
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import torch

__all__ = ['count_dispatched_ops', 'paired_times', 'peak_memory_mb', 'reset_peak_memory',
           'run_case']


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


class _OpCounter:
    """Counts the aten ops dispatched while active (each is at least one kernel launch on a
    GPU, views aside)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counter.count += 1
                return func(*args, **(kwargs or {}))

        self.count = 0
        self.mode = Mode()


def count_dispatched_ops(step: torch.nn.Module, names: Sequence[str], batch_size: int,
                         views: int, warmup: int = 2, seed: int = 1,
                         timed: int = 0) -> Union[int, Tuple[int, float]]:
    """Aten ops one text step dispatches: loss, backward and an SGD step on the prompt.

    Args:
        step: A ``PompPretrainer`` (its ``compute_loss``) or an ``OfficialPromptStep``.
        names: The vocabulary (only its size is used).
        batch_size, views: Images and views per image of the step's features.
        warmup: Steps run first (token caches and tables built, optimizer state made).
        seed: Seed of the features and labels.
        timed: Also time this many more steps (outside the counting mode) and return
            ``(count, median seconds)``.
    """
    import torch.nn.functional as F
    official = hasattr(step, 'text_features')
    ctx = step.ctx if official else step.prompt_learner.ctx
    dim = step.tower.output_dim if official else step.text_encoder.tower.output_dim
    device = ctx.device
    gen = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(batch_size * views, dim, generator=gen), dim=-1).to(device)
    labels = [torch.randint(len(names), (batch_size,), generator=gen)
              for _ in range(warmup + 1 + timed)]
    draws = torch.Generator().manual_seed(seed + 1)
    optim = torch.optim.SGD([ctx], lr=0.002, momentum=0.9, weight_decay=5e-4)

    def run(i: int) -> None:
        if official:
            loss = step(feats, labels[i].repeat_interleave(views).to(device), generator=draws)
        else:
            loss = step.compute_loss(feats, labels[i], views)['loss']
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    for i in range(warmup):
        run(i)
    counter = _OpCounter()
    with counter.mode:
        run(warmup)
    if not timed:
        return counter.count
    import statistics
    import time
    times = []
    for i in range(warmup + 1, warmup + 1 + timed):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        run(i)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return counter.count, statistics.median(times)
