"""What hashing every CLIP weight costs: the text towers of random ViT-B/16 and ViT-L/14.

Per tower: the first :func:`pomp_mm.clip.weights_fingerprint` (reads every byte), a second call
on unchanged weights (per-tensor digests reused), and the sampled hash pomp_mm used before
(65,536 values per tensor, blind to most single-value edits), side by side in one run; best of
3 (the first call: once, on fresh tensors).

    python tools/benchmarks/fingerprint.py [--models ViT-B-16,ViT-L-14] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import open_clip
import torch

from pomp_mm.cli import positive_int
from pomp_mm.clip import sampled_fingerprint, weights_fingerprint
from pomp_mm.towers import build_text_tower


def _best(fn, repeats: int = 3) -> float:
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', default='ViT-B-16,ViT-L-14')
    p.add_argument('--threads', type=positive_int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(','):
        tower = build_text_tower(open_clip.create_model(name, pretrained=None))
        mb = sum(t.numel() * t.element_size() for t in tower.state_dict().values()) / 2 ** 20
        full = _best(lambda: weights_fingerprint(tower, tower.transformer), repeats=1)
        again = _best(lambda: weights_fingerprint(tower, tower.transformer))
        sampled = _best(lambda: sampled_fingerprint(tower, tower.transformer))
        rows.append((name, mb, full, again, sampled))
    print(f'# Fingerprint of a CLIP text tower (fp32, {torch.get_num_threads()} threads)\n')
    print('| model | text weights (MB) | every weight, first (s) | MB/s | again, unchanged (s) '
          '| old sampled hash (s) | first / sampled |')
    print('|---|---|---|---|---|---|---|')
    for name, mb, full, again, sampled in rows:
        print(f'| {name} | {mb:.0f} | {full:.3f} | {mb / full:.0f} | {again:.4f} | '
              f'{sampled:.3f} | {full / sampled:.1f} |')


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
