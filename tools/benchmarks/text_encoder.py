"""Benchmark the POMP text encoder on a random ViT-B-16 text tower (no download).

(a) Full 77-token vs EOT-truncated encoding for n_ctx 4 and 16, each prompt run whole, and
    EOT-truncated with the shared [SOS, ctx] prefix run once per chunk and the classes' own
    tokens packed without padding (PompTextEncoder's default): time, peak memory, speed-up and
    max abs difference of the embeddings.
(b) All 21,841 ``imagenet21k`` names: first call vs cached call (the on-disk cache).

Each case runs in a fresh process so that peak memory is its own: CUDA max allocated on a GPU,
on CPU the growth of the process's peak resident set (VmHWM, reset before the measured
call) over its resident set at that point.
Targets: truncation >= 3x faster at n_ctx=16 with max abs diff <= 1e-5; cached 21,841-class
call < 0.5 s.

    python tools/benchmarks/text_encoder.py [--num-names 512] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch


from pomp_mm._benchmarking import peak_memory_mb, reset_peak_memory, run_case
from pomp_mm.cli import positive_int


def _timed(fn, device: str, repeats: int):
    best, out = float('inf'), None
    for _ in range(repeats):
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def _encoder(case: dict):
    from pomp_mm import PompTextEncoder
    torch.manual_seed(0)
    return PompTextEncoder(clip_model=case['model'], vocabulary=case['vocab'], cat_bg=False,
                           n_ctx=case['n_ctx'], cache_dir=case.get('cache_dir'),
                           chunk_size=case['chunk_size'], truncate=case.get('truncate', True),
                           share_prefix=case.get('share_prefix', True),
                           prompt_trainable=False).to(case['device']).eval()


def worker(case: dict) -> dict:
    """Run one measurement in this process; returns times (s) and peak memory (MB)."""
    import logging
    logging.disable(logging.WARNING)
    from pomp_mm.vocabulary import load_vocabulary
    device = case['device']
    vocab = load_vocabulary(case['vocab'])
    names = list(vocab.names[:case['num_names']]) if case.get('num_names') else vocab
    enc = _encoder(case)
    with torch.no_grad():
        if case['kind'] == 'truncation':
            enc.encode_text(names[:8])  # warm-up: tokenizer, kernels
            enc.prompt_learner.tokenize(names, enc.tokenizer, enc.tower.context_length)
            base = reset_peak_memory(device)
            seconds, emb = _timed(lambda: enc.encode_text(names, progress=False), device,
                                  case['repeats'])
            torch.save(emb.cpu(), case['out'])
            return {'seconds': seconds, 'peak_mb': peak_memory_mb(device) - base}
        # full vocabulary: first call (tokenize + encode + write cache), then a fresh encoder
        base = reset_peak_memory(device)
        first, emb = _timed(lambda: enc.encode_text(names), device, 1)
        peak = peak_memory_mb(device) - base
        fresh = _encoder(case)
        cached, again = _timed(lambda: fresh.encode_text(names), device, 3)
        assert torch.equal(emb.cpu(), again.cpu())
        return {'first': first, 'cached': cached, 'peak_mb': peak, 'classes': len(names)}


def _run(case: dict) -> dict:
    return run_case(__file__, case)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--model', default='ViT-B-16', help='open_clip model name (random weights)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--num-names', type=int, default=512, help='names for part (a)')
    p.add_argument('--chunk-size', type=positive_int, default=1024)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--skip-full-vocab', action='store_true', help='skip part (b)')
    p.add_argument('--worker', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    device_name = (torch.cuda.get_device_name() if args.device.startswith('cuda')
                   else f'CPU ({os.cpu_count()} cores, torch {torch.__version__})')
    mem = 'CUDA max allocated' if args.device.startswith('cuda') else 'peak RSS growth'
    print(f'# PompTextEncoder benchmark: random {args.model} text tower on {device_name}\n')
    print(f'(a) {args.num_names} imagenet1k names, best of {args.repeats}; memory = {mem}\n')
    print('| n_ctx | encoding | time (s) | peak mem (MB) | speed-up | mem ratio | max abs diff |')
    print('|---|---|---|---|---|---|---|')
    with tempfile.TemporaryDirectory() as tmp:
        variants = (('full 77 tokens', False, False), ('EOT-truncated', True, False),
                    ('EOT-truncated + shared prefix', True, True))
        for n_ctx in (4, 16):
            res = {}
            for label, truncate, share in variants:
                out = os.path.join(tmp, f'{n_ctx}_{truncate}_{share}.pt')
                res[label] = _run(dict(
                    kind='truncation', model=args.model, device=args.device, vocab='imagenet1k',
                    num_names=args.num_names, n_ctx=n_ctx, chunk_size=args.chunk_size,
                    truncate=truncate, share_prefix=share, repeats=args.repeats, out=out))
                res[label]['emb'] = torch.load(out)
            full = res[variants[0][0]]
            for label, _, _ in variants:
                r = res[label]
                diff = (r['emb'] - full['emb']).abs().max().item()
                speed = full['seconds'] / r['seconds']
                ratio = r['peak_mb'] / max(full['peak_mb'], 1e-9)
                print(f"| {n_ctx} | {label} | {r['seconds']:.3f} | {r['peak_mb']:.0f} | "
                      f"{speed:.2f}x | {ratio:.2f} | {diff:.2e} |")
        if args.skip_full_vocab:
            return
        r = _run(dict(kind='full_vocab', model=args.model, device=args.device,
                      vocab='imagenet21k', n_ctx=16, chunk_size=args.chunk_size,
                      cache_dir=os.path.join(tmp, 'cache')))
    print(f"\n(b) all {r['classes']} imagenet21k names, n_ctx 16, truncated, "
          f"chunks of {args.chunk_size}\n")
    print('| call | time (s) | peak mem (MB) |')
    print('|---|---|---|')
    print(f"| first (tokenize + encode + write cache) | {r['first']:.2f} | {r['peak_mb']:.0f} |")
    print(f"| cached (fresh encoder, file read) | {r['cached']:.3f} | - |")
    print(f"\ncached / first: {r['cached'] / r['first']:.4f}")


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
