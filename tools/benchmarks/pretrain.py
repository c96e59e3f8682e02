"""Benchmark one POMP pre-training step: full softmax vs POMP local contrast (no download).

A "step" is what changes between the cases, the prompt / text side: sample the K contrasted
classes, embed their K prompts through the frozen text tower, the locally corrected
cross-entropy against *fixed, precomputed* image features, backward to the prompt ``ctx`` and an
SGD step on it (lr 0.002, momentum 0.9, wd 5e-4, as in the configs). The image tower is frozen
and runs under ``no_grad``: its cost is the same in every case, so it is left out of the
comparisons (``--full-scale`` adds it back to give images/s).

(1) Full softmax over N=1,000 classes (``num_sampled=None``, the CoOp baseline) vs POMP with
    K in {128, 256, 512, 1000}, same N=1,000 vocabulary.
(2) POMP K=1,000 at N=1,000 vs N=21,841 (``imagenet21k``): the cost should follow K, not N.

The N=1,000 vocabulary is, by default, 1,000 ``imagenet21k`` names drawn at random (seed 0), so
its names have the same token-length distribution as the K=1,000 classes drawn from all 21,841
(activation memory follows the sampled names' total token count);
``--small-vocab first`` takes the first 1,000 names instead, ``imagenet1k`` the ImageNet-1k ones.

Each case runs in a fresh process; random-weight open_clip model, same labels (seeded) in every
case. All N prompts are tokenized once before timing (``PromptLearner`` caches token ids; lazily
the first steps at N=21,841 would also pay the BPE tokenizer), then a small kernel warm-up,
``--warmup`` untimed steps and ``--steps`` timed ones (median reported). Peak memory is over all
steps of the case, above the usage just before the first one: CUDA max allocated on a GPU, on CPU
the growth of the peak resident set (VmHWM, reset via /proc/self/clear_refs; CPU workers run
with MALLOC_MMAP_THRESHOLD_=65536 unless set, so that this follows live tensors).
Targets: K=128 vs full softmax at N=1,000, memory ratio <= 0.12 and time ratio <= 0.30 (paper
Table 3: 0.19 and 0.46); K=1,000 memory at N=21,841 within 5% of N=1,000. With
PompTextEncoder's shared prefix the [SOS, ctx] positions run once and the K classes' own tokens
are packed without padding, so activation memory grows with the step's total own tokens (about
K x the mean name length); a diagnostic line compares memory per own token.

``--official``: pomp_mm's ``contrast='per_image'`` step against a transcription of the
official step (``pomp_mm.pretrain.official``: 77-token prompts from per-class buffers, B x views +
K - 1 of them per step), the two interleaved in one process per case on the same CLIP, batch,
K, N = 21,841 and n_ctx (K in {128, 1000}, n_ctx in {4, 16}); text side alone and full step
(image tower forward added); target at K = 1,000, n_ctx 16: pomp_mm >= 5x faster per full step at
no more memory.

``--full-scale`` (GPU): random ViT-B/16, bf16 autocast, 32 images x 4 views, K=1,000 of N=21,841;
a step is then the image-tower forward of the 128 views plus the text step above; reports image
views/s (goal > 1,000) and absolute peak memory (goal < 16 GB).

    python tools/benchmarks/pretrain.py --quick                  # smoke test, < 1 min on CPU
    python tools/benchmarks/pretrain.py                          # ViT-B-16, CPU: ~30 min on 2 cores
    python tools/benchmarks/pretrain.py --warmup 0 --threads 1   # the same, ~20 min
    python tools/benchmarks/pretrain.py --device cuda --precision bf16 --batch-size 32 --views 4
    python tools/benchmarks/pretrain.py --full-scale             # on a GPU
    python tools/benchmarks/pretrain.py --official --precision bf16 --threads 1  # ~40 min, CPU
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time

import torch


from pomp_mm._benchmarking import peak_memory_mb, reset_peak_memory, run_case
from pomp_mm.cli import positive_int

LARGE_VOCAB = 'imagenet21k'
SMALL_VOCABS = ('random', 'first', 'imagenet1k')


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _vocabulary(kind: str, size: int, source: str = LARGE_VOCAB):
    """``size`` classes: ``kind`` 'random' / 'first' of ``source`` (imagenet21k), or
    'imagenet1k'."""
    from pomp_mm.vocabulary import Vocabulary, load_vocabulary
    if kind == 'imagenet1k':
        vocab = load_vocabulary('imagenet1k')
        index = list(range(len(vocab)))
    else:
        vocab = load_vocabulary(source)
        if kind == 'all' or size >= len(vocab):
            return vocab
        if kind == 'random':
            gen = torch.Generator().manual_seed(0)
            index = sorted(torch.randperm(len(vocab), generator=gen)[:size].tolist())
        else:
            index = list(range(len(vocab)))
    index = index[:size]
    if len(index) == len(vocab):
        return vocab
    return Vocabulary(tuple(vocab.names[i] for i in index), tuple(vocab.ids[i] for i in index),
                      f'{vocab.source}[{kind} {len(index)}]')


def _autocast(device: str, precision: str):
    if precision == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device_type='cuda' if device.startswith('cuda') else 'cpu',
                          dtype=torch.bfloat16)


def _fixed_inputs(model, case: dict, num_classes: int):
    """Seeded random images ``[batch, views, 3, H, W]`` on the case's device and one label
    batch per step (warm-up and timed), the same in every case."""
    size = model.visual.image_size
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(case['batch_size'], case['views'], 3, *size, generator=gen)
    labels = [torch.randint(num_classes, (case['batch_size'],), generator=gen)
              for _ in range(case['warmup'] + case['steps'])]
    return images.to(case['device']), labels


def worker(case: dict) -> dict:
    """Run one case in this process; returns step times (s) and peak memory (MB)."""
    import logging
    import warnings
    logging.disable(logging.WARNING)
    warnings.filterwarnings('ignore')
    from pomp_mm.clip import resolve_clip_spec
    from pomp_mm.pretrain.model import PompPretrainer

    device, full_scale = case['device'], case.get('full_scale', False)
    if case.get('threads'):
        torch.set_num_threads(case['threads'])
    tag = case['label']
    vocab = _vocabulary(case['vocab'], case['num_classes'], case.get('source', LARGE_VOCAB))
    torch.manual_seed(0)
    model = PompPretrainer(clip_model=resolve_clip_spec(case['model']), pretrained=None,
                           vocabulary=vocab, n_ctx=case['n_ctx'], num_sampled=case['k'],
                           sampling='uniform', correction='ln', chunk_size=case['chunk_size'],
                           attention=case.get('attention', 'auto'),
                           compile=case.get('compile', False))
    model.to(device).train()
    learner, enc = model.prompt_learner, model.text_encoder
    enc.share_prefix = case.get('share_prefix', True)
    ctx_len = enc.tower.context_length
    optim = torch.optim.SGD([learner.ctx], lr=0.002, momentum=0.9, weight_decay=5e-4)
    amp = lambda: _autocast(device, case['precision'])  # noqa: E731

    # 1. tokenize all N prompts once (the per-name token cache is then warm in every case)
    t0 = time.perf_counter()
    learner.tokenize(list(vocab.names), enc.tokenizer, ctx_len)
    tokenize_s = time.perf_counter() - t0

    # 2. fixed inputs: images (all views), their frozen features, and one label batch per step
    images, labels = _fixed_inputs(model, case, len(vocab))
    batch, views = case['batch_size'], case['views']
    total = case['warmup'] + case['steps']
    with amp():
        feats = model.encode_images(images)
    if not full_scale:
        del images

    # 3. kernel warm-up on a few prompts (small, so it leaves little freed memory behind)
    with amp():
        emb = enc.encode_names(list(vocab.names[:8]))
    emb.float().sum().backward()
    learner.ctx.grad = None
    del emb

    base = reset_peak_memory(device)
    times, image_times, seq_lens, step_tokens, losses = [], [], [], [], []
    for step in range(total):
        _sync(device)
        start = time.perf_counter()
        if full_scale:
            with amp():
                feats = model.encode_images(images)
            _sync(device)
            image_done = time.perf_counter()
        with amp():
            out = model.compute_loss(feats, labels[step], views)
        out['loss'].backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        _sync(device)
        end = time.perf_counter()
        loss = float(out['loss'])
        names = [vocab.names[i] for i in model.last_class_ids.tolist()]
        eot = learner.tokenize(names, enc.tokenizer, ctx_len).eot
        seq_lens.append(int(eot.max()) + 1)
        step_tokens.append((len(names), int(eot.sum()) + len(names)))
        losses.append(loss)
        if step >= case['warmup']:
            times.append(end - start)
            if full_scale:
                image_times.append(image_done - start)
        _log(f'  [{tag}] step {step + 1}/{total}'
             f'{" (warm-up)" if step < case["warmup"] else ""}: {end - start:.2f} s, '
             f'loss {loss:.3f}, {len(names)} classes, {seq_lens[-1]} tokens')
    peak = peak_memory_mb(device)
    # positions every prompt shares ([SOS, ctx]) run once per chunk, not once per class
    shared = enc.share_prefix and enc.tower.shares_prefix and learner.has_shared_prefix
    shared_tokens = learner.n_ctx + 1 if shared else 0
    # token positions through the text tower per step: the prefix once + the own tokens, packed
    # or padded to the step's longest; without the shared prefix, every prompt padded
    packed = shared and enc.attention_mode() in ('varlen', 'grouped')
    own = [total - k * shared_tokens if packed else k * (longest - shared_tokens)
           for (k, total), longest in zip(step_tokens, seq_lens)]
    if not all(math.isfinite(v) for v in losses):
        raise FloatingPointError(f'non-finite loss in {tag}: {losses}')
    return {'step_s': statistics.median(times), 'best_s': min(times),
            'image_s': statistics.median(image_times) if image_times else None,
            'peak_mb': peak - base, 'peak_abs_mb': peak, 'classes': len(vocab),
            'contrasted': int(out['num_contrasted']), 'max_tokens': max(seq_lens),
            'positions': max(own) + shared_tokens,
            'shared_tokens': shared_tokens, 'tokenize_s': tokenize_s, 'views': batch * views}


def official_worker(case: dict) -> dict:
    """pomp_mm's per-image step and the official step on one CLIP, interleaved: per step and
    method, the image tower's time, the text side's time and both peaks."""
    import logging
    import warnings
    logging.disable(logging.WARNING)
    warnings.filterwarnings('ignore')
    from pomp_mm.clip import resolve_clip_spec
    from pomp_mm.pretrain.model import PompPretrainer
    from pomp_mm.pretrain.official import OfficialPromptStep

    device = case['device']
    if case.get('threads'):
        torch.set_num_threads(case['threads'])
    vocab = _vocabulary(case['vocab'], case['num_classes'], case.get('source', LARGE_VOCAB))
    torch.manual_seed(0)
    model = PompPretrainer(clip_model=resolve_clip_spec(case['model']), pretrained=None,
                           vocabulary=vocab, n_ctx=case['n_ctx'], num_sampled=case['k'],
                           contrast='per_image', correction='log10', mask_duplicate_names=False,
                           chunk_size=case['chunk_size'],
                           attention=case.get('attention', 'auto'),
                           compile=case.get('compile', False))
    model.to(device).train()
    learner, enc = model.prompt_learner, model.text_encoder
    learner.tokenize(list(vocab.names), enc.tokenizer, enc.tower.context_length)
    official = OfficialPromptStep(enc.tower, vocab.names, case['n_ctx'], case['k'],
                                  enc.tokenizer).to(device)
    with torch.no_grad():
        official.ctx.copy_(learner.ctx)
    optims = {name: torch.optim.SGD([ctx], lr=0.002, momentum=0.9, weight_decay=5e-4)
              for name, ctx in (('pomp_mm', learner.ctx), ('official', official.ctx))}
    images, labels = _fixed_inputs(model, case, len(vocab))
    views, total = case['views'], case['warmup'] + case['steps']
    draws = torch.Generator().manual_seed(2)
    amp = lambda: _autocast(device, case['precision'])  # noqa: E731

    def text_step(name, feats, step):
        if name == 'pomp_mm':
            loss = model.compute_loss(feats, labels[step], views)['loss']
        else:
            loss = official(feats, labels[step].repeat_interleave(views), generator=draws)
        loss.backward()
        optims[name].step()
        optims[name].zero_grad(set_to_none=True)
        return float(loss)

    with amp():  # kernel warm-up of both paths
        feats = model.encode_images(images)
        for name in optims:
            text_step(name, feats, 0)
    model.forward_count.zero_()
    out = {name: {'image_s': [], 'text_s': [], 'text_mb': [], 'full_mb': [], 'abs_mb': []}
           for name in optims}
    for step in range(total):
        order = list(optims) if step % 2 == 0 else list(optims)[::-1]
        for name in order:
            del feats
            base = reset_peak_memory(device)
            _sync(device)
            start = time.perf_counter()
            with amp():
                feats = model.encode_images(images)
            _sync(device)
            image_done = time.perf_counter()
            image_peak = peak_memory_mb(device) - base
            text_base = reset_peak_memory(device)
            with amp():
                loss = text_step(name, feats, step)
            _sync(device)
            end = time.perf_counter()
            text_peak = peak_memory_mb(device) - text_base
            if not math.isfinite(loss):
                raise FloatingPointError(f'non-finite {name} loss at step {step}: {loss}')
            _log(f'  [{case["label"]}] step {step + 1}/{total} {name}: image '
                 f'{image_done - start:.2f} s, text {end - image_done:.2f} s, loss {loss:.3f}')
            if step >= case['warmup']:
                r = out[name]
                r['image_s'].append(image_done - start)
                r['text_s'].append(end - image_done)
                r['text_mb'].append(text_peak)
                r['full_mb'].append(max(image_peak, text_base - base + text_peak))
                r['abs_mb'].append(max(base + image_peak, text_base + text_peak))
    summary = {}
    for name, r in out.items():
        text = statistics.median(r['text_s'])
        full = statistics.median([a + b for a, b in zip(r['image_s'], r['text_s'])])
        summary[name] = {'text_s': text, 'full_s': full, 'text_mb': max(r['text_mb']),
                         'full_mb': max(r['full_mb']), 'abs_mb': max(r['abs_mb']),
                         'views_s': case['batch_size'] * views / full}
    summary['official_buffers_mb'] = official.buffer_bytes() / 2**20
    summary['classes'] = len(vocab)
    return summary


def _official(args, base: dict) -> None:
    """Part (3): pomp_mm's step vs the official step, side by side in one process per case."""
    ks = sorted({int(k) for k in args.official_ks.split(',') if k.strip()})
    n_ctxs = sorted({int(n) for n in args.official_n_ctx.split(',') if n.strip()})
    large_kind = 'random' if args.large_classes else 'all'
    results = {}
    start = time.perf_counter()
    cases = [(k, n) for n in n_ctxs for k in ks]
    for i, (k, n_ctx) in enumerate(cases):
        case = dict(base, vocab=large_kind, num_classes=args.large_classes, k=k, n_ctx=n_ctx,
                    label=f'K={k} n_ctx={n_ctx}')
        _log(f'[{i + 1}/{len(cases)}] official vs pomp_mm, {case["label"]} '
             f'({time.perf_counter() - start:.0f} s)')
        results[k, n_ctx] = run_case(__file__, dict(case, official=True))
    _log(f'done in {time.perf_counter() - start:.0f} s')
    n = next(iter(results.values()))['classes']
    mem = 'CUDA max allocated' if args.device.startswith('cuda') else 'peak RSS growth'
    print(f'# pomp_mm vs the official POMP step: random {args.model}, {args.precision}, on '
          f'{_device_name(args.device)}\n')
    print(f'Same CLIP, batch ({args.batch_size} images x {args.views} views), K and N={n:,} in '
          'one process; the two steps alternate (order flipped every step). pomp_mm: '
          "PompPretrainer(contrast='per_image', correction='log10', mask_duplicate_names=False), "
          f'the union of classes once, {_encoding(args)}. Official: a '
          'transcription of trainers/pomp.py (pomp_mm.pretrain.official), B x views + K - 1 '
          'prompts padded to the full context from per-class embedding buffers. Text side = '
          'sample, embed, loss, backward, SGD on ctx against the image features; full step = '
          f'the image tower forward (no grad) + the text side. Median of {args.steps} steps '
          f'after {args.warmup} warm-up; memory = {mem} within the step. Ratios are pomp_mm / '
          'official.\n')
    print('| K | n_ctx | text: pomp_mm (s) | text: official (s) | time ratio | full: pomp_mm (s) '
          '| full: official (s) | time ratio | text mem: pomp_mm (MB) | text mem: official (MB) '
          '| mem ratio | full-step mem ratio | official buffers (MB) | image-views/s: pomp_mm '
          '| image-views/s: official | peak (GB): pomp_mm | peak (GB): official |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for (k, n_ctx), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        a, b = r['pomp_mm'], r['official']
        print(f'| {k:,} | {n_ctx} | {a["text_s"]:.3f} | {b["text_s"]:.3f} | '
              f'{a["text_s"] / b["text_s"]:.3f} | {a["full_s"]:.3f} | {b["full_s"]:.3f} | '
              f'{a["full_s"] / b["full_s"]:.3f} | {a["text_mb"]:.0f} | {b["text_mb"]:.0f} | '
              f'{a["text_mb"] / max(b["text_mb"], 1e-9):.3f} | '
              f'{a["full_mb"] / max(b["full_mb"], 1e-9):.3f} | '
              f'{r["official_buffers_mb"]:.0f} | {a["views_s"]:,.0f} | {b["views_s"]:,.0f} | '
              f'{a["abs_mb"] / 1024:.2f} | {b["abs_mb"] / 1024:.2f} |')
    key = (max(ks), max(n_ctxs))
    r = results[key]
    ratio = r['pomp_mm']['full_s'] / r['official']['full_s']
    mem_ratio = r['pomp_mm']['full_mb'] / max(r['official']['full_mb'], 1e-9)
    text_ratio = r['pomp_mm']['text_s'] / r['official']['text_s']
    print(f'\nTargets (K={key[0]:,}, n_ctx {key[1]}, N={n:,}): pomp_mm text side at least 8x '
          f'faster: time ratio {text_ratio:.3f} (<= 0.125): {_verdict(text_ratio <= 0.125)}; '
          f'full step at least 5x faster: time ratio {ratio:.3f} (<= 0.2): '
          f'{_verdict(ratio <= 0.2)}; at no more memory: ratio {mem_ratio:.3f} (<= 1): '
          f'{_verdict(mem_ratio <= 1)}')
    if args.batch_size * args.views >= 128:
        views_s, peak = r['pomp_mm']['views_s'], r['pomp_mm']['abs_mb'] / 1024
        print(f'At this scale ({args.batch_size} x {args.views} views): {views_s:,.0f} '
              f'image-views/s (>= 4,000): {_verdict(views_s >= 4000)}; peak {peak:.2f} GB '
              f'(< 16): {_verdict(peak < 16)}')


def _dispatch_clip(width: int) -> dict:
    """The --dispatch tower: ViT-B/16's 12 text layers and 77 positions, ``width`` wide."""
    return dict(embed_dim=32, vision_cfg=dict(image_size=32, layers=1, width=64, patch_size=16),
                text_cfg=dict(context_length=77, vocab_size=49408, width=width,
                              heads=max(4, width // 64), layers=12))


def _dispatch(args) -> None:
    """Ops dispatched per text step, every attention path and the official step."""
    import logging
    import warnings
    logging.disable(logging.WARNING)
    warnings.filterwarnings('ignore')
    from pomp_mm._benchmarking import count_dispatched_ops
    from pomp_mm.pretrain.model import PompPretrainer
    from pomp_mm.pretrain.official import OfficialPromptStep
    from pomp_mm.vocabulary import load_vocabulary
    vocab = load_vocabulary(LARGE_VOCAB)
    ks = [128] if args.quick else [128, 1000]
    n_ctx, batch, views = 16, 32, 4
    modes = [m for m in args.dispatch_steps.split(',') if m != 'official']
    official_too = 'official' in args.dispatch_steps.split(',')
    counts, times = {}, {}
    start = time.perf_counter()
    for k in ks:
        for mode in modes:
            _log(f'[dispatch] {mode} K={k} ({time.perf_counter() - start:.0f} s)')
            torch.manual_seed(0)
            model = PompPretrainer(clip_model=_dispatch_clip(args.dispatch_width),
                                   vocabulary=vocab, n_ctx=n_ctx,
                                   num_sampled=k, contrast='per_image', correction='log10',
                                   mask_duplicate_names=False, attention=mode)
            model.to(args.device).train()
            counts[mode, k], times[mode, k] = count_dispatched_ops(
                model, vocab.names, batch, views, timed=args.steps)
        if official_too:
            _log(f'[dispatch] official K={k} ({time.perf_counter() - start:.0f} s)')
            enc = model.text_encoder
            official = OfficialPromptStep(enc.tower, vocab.names, n_ctx, k,
                                          enc.tokenizer).to(args.device)
            counts['official', k], times['official', k] = count_dispatched_ops(
                official, vocab.names, batch, views, timed=args.steps)
            del official
        del model
    print(f'# Ops dispatched per text step on {_device_name(args.device)}\n')
    print(f'One text step (loss, backward, SGD on ctx) after 2 warm-up steps, counted with a '
          f'TorchDispatchMode (each op is at least one kernel launch on a GPU, views aside); '
          f'12-layer text tower ({args.dispatch_width} wide), 77 positions, {batch} images x '
          f"{views} views, n_ctx {n_ctx}, contrast='per_image', log10, N = {len(vocab):,}. "
          f'Time: median of {args.steps} more steps on this device (fp32), not counted.\n')
    head = ' | '.join(f'K = {k:,}' for k in ks)
    thead = ' | '.join(f'time (s), K = {k:,}' for k in ks)
    ratio_head = f' / official at K = {ks[-1]:,} |' if official_too else ''
    print(f'| step | {head} | K = {ks[-1]:,} / K = {ks[0]:,} |{ratio_head} {thead} |')
    print('|---|' + '---:|' * (2 * len(ks) + 1 + official_too))
    names = {'official': 'official transcription (`pomp_mm.pretrain.official`)',
             'varlen': "pomp_mm, `attention='varlen'`", 'grouped': "pomp_mm, `'grouped'`",
             'padded': "pomp_mm, `'padded'`"}
    for mode in ['official'] * official_too + modes:
        cells = ' | '.join(f'{counts[mode, k]:,}' for k in ks)
        growth = counts[mode, ks[-1]] / counts[mode, ks[0]]
        vs = f' {counts[mode, ks[-1]] / counts["official", ks[-1]]:.2f} |' if official_too else ''
        tcells = ' | '.join(f'{times[mode, k]:.3f}' for k in ks)
        print(f'| {names[mode]} | {cells} | {growth:.2f} |{vs} {tcells} |')
    if not (official_too and 'varlen' in modes):
        return
    v, o = counts['varlen', ks[-1]], counts['official', ks[-1]]
    flat = counts['varlen', ks[-1]] / counts['varlen', ks[0]]
    print(f"\nTargets: 'varlen' at K = {ks[-1]:,} no more ops than the official step: "
          f'{v:,} vs {o:,}: {_verdict(v <= o)}; K = {ks[-1]:,} within 10 % of K = {ks[0]:,}: '
          f'{flat:.3f}: {_verdict(abs(flat - 1) <= 0.1)}')


def _run(case: dict) -> dict:
    return run_case(__file__, case)


def _encoding(args) -> str:
    if args.no_share_prefix:
        return 'every prompt whole, padded to the longest (share_prefix=False)'
    compiled = ', torch.compile' if args.compile else ''
    mode = args.attention
    if mode == 'padded':
        return ('shared [SOS, ctx] prefix once, own tokens padded to the longest '
                f"(attention='padded'{compiled})")
    if mode == 'grouped':
        return ('shared [SOS, ctx] prefix once, own tokens packed, one attention call per '
                f"name length (attention='grouped'{compiled})")
    if mode == 'varlen':
        return ('shared [SOS, ctx] prefix once, own tokens packed, one attention call per '
                f"layer (attention='varlen'{compiled})")
    return ("shared [SOS, ctx] prefix once, own tokens packed (attention='auto': varlen on "
            f'CUDA, grouped on the CPU{compiled})')


def _verdict(ok: bool) -> str:
    return 'PASS' if ok else 'FAIL'


def _device_name(device: str) -> str:
    if device.startswith('cuda'):
        return torch.cuda.get_device_name(torch.device(device))
    return (f'CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads, '
            f'torch {torch.__version__})')


def _full_scale(args, base: dict) -> None:
    case = dict(base, label=f'full scale K={args.k_full}', vocab='all', num_classes=0,
                k=args.k_full, full_scale=True)
    _log(f'[1/1] {case["label"]}, N={LARGE_VOCAB}, {args.batch_size}x{args.views} views')
    r = _run(case)
    views_s = r['views'] / r['step_s']
    peak_gb = r['peak_abs_mb'] / 1024
    mem = 'CUDA max allocated' if args.device.startswith('cuda') else 'peak RSS'
    print(f'# POMP pre-training step at full scale on {_device_name(args.device)}\n')
    print(f'random {args.model}, {args.precision}, {args.batch_size} images x {args.views} views, '
          f'K={r["contrasted"]} of N={r["classes"]:,}, n_ctx {args.n_ctx}; median of '
          f'{args.steps} steps after {args.warmup} warm-up; step = image tower forward '
          f'(no grad) + text step (sample, embed K prompts, loss, backward, SGD on ctx)\n')
    print('| image tower (s) | text step (s) | step (s) | image-views/s | '
          f'peak mem, absolute ({mem}, GB) | growth during steps (GB) |')
    print('|---|---|---|---|---|---|')
    print(f'| {r["image_s"]:.3f} | {r["step_s"] - r["image_s"]:.3f} | {r["step_s"]:.3f} | '
          f'{views_s:,.0f} | {peak_gb:.2f} | {r["peak_mb"] / 1024:.2f} |')
    print(f'\nthroughput {views_s:,.0f} views/s (goal > 1,000): {_verdict(views_s > 1000)}')
    print(f'peak memory {peak_gb:.2f} GB (goal < 16 GB): {_verdict(peak_gb < 16)}')


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--model', help="open_clip model name (random weights), 'tiny' or a .json "
                   "config (default ViT-B-16; tiny with --quick)")
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--batch-size', type=positive_int,
                   help='images per step (default 8; 32 full scale)')
    p.add_argument('--views', type=int, help='views per image (default 2; 4 full scale)')
    p.add_argument('--n-ctx', type=int, default=16)
    p.add_argument('--ks', help='POMP K values for part (1) (default 128,256,512,1000; '
                   '128 with --quick)')
    p.add_argument('--num-classes', type=int, default=1000, help='small N (parts 1 and 2)')
    p.add_argument('--small-vocab', choices=SMALL_VOCABS, default='random',
                   help='the small-N classes: random (seed 0) or first imagenet21k names, or '
                   'imagenet1k (default random)')
    p.add_argument('--large-classes', type=int,
                   help='large N of part (2): all 21,841 imagenet21k names by default '
                   '(3,000 random ones with --quick)')
    p.add_argument('--k-full', type=int,
                   help='K of part (2) and --full-scale (default 1000; 128 with --quick)')
    p.add_argument('--steps', type=int, help='timed steps, median reported (default: 2 on CPU, '
                   '20 on GPU)')
    p.add_argument('--warmup', type=int, help='untimed steps first (default: 1 on CPU, 0 with '
                   '--quick, 5 on GPU); a few-prompt kernel warm-up always runs before')
    p.add_argument('--precision', choices=['fp32', 'bf16'],
                   help='bf16 = torch.autocast (default fp32; bf16 with --full-scale)')
    p.add_argument('--threads', type=positive_int, help='torch CPU threads (default: torch\'s own)')
    p.add_argument('--chunk-size', type=positive_int, default=1024,
                   help='prompts per text-tower call')
    p.add_argument('--skip-large-vocab', action='store_true', help='skip part (2)')
    p.add_argument('--no-share-prefix', action='store_true',
                   help='run every prompt through all positions (PompTextEncoder '
                   'share_prefix=False), for comparison')
    p.add_argument('--attention', choices=['auto', 'varlen', 'grouped', 'padded'],
                   default='auto', help="PompPretrainer's attention path (default auto)")
    p.add_argument('--no-pack', action='store_true', help="the same as --attention padded")
    p.add_argument('--compile', action='store_true',
                   help='PompPretrainer(compile=True): the packed text blocks through '
                   'torch.compile')
    p.add_argument('--dispatch', action='store_true',
                   help='count the aten ops one text step dispatches (forward, backward, SGD) '
                   'for each attention path and the official step, at K in {128, 1000}, '
                   'N = 21,841, n_ctx 16, 12 text layers (narrow: the count does not depend '
                   'on the width); any device')
    p.add_argument('--dispatch-steps', default='official,varlen,grouped,padded',
                   help='rows of --dispatch (comma-separated; the official step at K = 1,000 '
                   'takes long on a CPU once the tower is wide)')
    p.add_argument('--dispatch-width', type=positive_int, default=64,
                   help='text width of the --dispatch tower (counts do not depend on it; '
                   'the times printed beside them do: 512 is ViT-B/16\'s)')
    p.add_argument('--quick', action='store_true',
                   help='smoke test: tiny model, full softmax vs K=128 at N=1,000, K=128 at '
                   'N=1,000 vs 3,000, 2 timed steps, no warm-up step; < 1 min on CPU')
    p.add_argument('--full-scale', action='store_true',
                   help='GPU run: ViT-B-16, bf16, 32x4 views, K=1,000 of N=21,841, with the '
                   'image tower; reports views/s and peak memory')
    p.add_argument('--vocabulary', default=LARGE_VOCAB,
                   help='built-in vocabulary the classes come from (default imagenet21k; '
                   'e.g. synthetic-pretrain for the synthetic world)')
    p.add_argument('--official', action='store_true',
                   help='part (3) only: pomp_mm\'s per-image step vs a transcription of the '
                   'official step, interleaved in one process, at N = all imagenet21k names')
    p.add_argument('--official-ks', help='K values of --official (default 128,1000; 128 '
                   'with --quick)')
    p.add_argument('--official-n-ctx', help='n_ctx values of --official (default 4,16)')
    p.add_argument('--worker', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        case = json.loads(args.worker)
        print(json.dumps(official_worker(case) if case.get('official') else worker(case)))
        return

    if args.no_pack:
        args.attention = 'padded'
    cuda = args.device.startswith('cuda')
    if args.threads:
        torch.set_num_threads(args.threads)  # for the device line of the report
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f'--device {args.device}: no CUDA GPU found')
    args.model = args.model or ('tiny' if args.quick else 'ViT-B-16')
    args.batch_size = args.batch_size or (32 if args.full_scale else 8)
    args.views = args.views or (4 if args.full_scale else 2)
    args.precision = args.precision or ('bf16' if args.full_scale else 'fp32')
    if args.steps is None:
        args.steps = 20 if cuda else 2
    if args.steps < 1 or args.warmup is not None and args.warmup < 0:
        raise SystemExit('--steps must be >= 1 and --warmup >= 0')
    args.ks = args.ks or ('128' if args.quick else '128,256,512,1000')
    args.k_full = args.k_full or (128 if args.quick else 1000)
    args.warmup = args.warmup if args.warmup is not None else (
        5 if cuda else 0 if args.quick else 1)
    if args.large_classes is None:
        args.large_classes = 3000 if args.quick else 0  # 0: the whole imagenet21k
    base = dict(model=args.model, device=args.device, batch_size=args.batch_size,
                views=args.views, n_ctx=args.n_ctx, precision=args.precision,
                chunk_size=args.chunk_size, steps=args.steps, warmup=args.warmup,
                threads=args.threads, share_prefix=not args.no_share_prefix,
                attention=args.attention, compile=args.compile, source=args.vocabulary)
    if args.dispatch:
        _dispatch(args)
        return
    if args.full_scale:
        _full_scale(args, base)
        return
    if args.official:
        args.official_ks = args.official_ks or ('128' if args.quick else '128,1000')
        args.official_n_ctx = args.official_n_ctx or '4,16'
        _official(args, base)
        return

    ks = sorted({int(k) for k in args.ks.split(',') if k.strip()})
    n = args.num_classes
    small = dict(base, vocab=args.small_vocab, num_classes=n)
    cases = [('full', dict(small, label=f'full softmax N={n}', k=None))]
    cases += [(k, dict(small, label=f'POMP K={k} N={n}', k=k)) for k in ks]
    if not args.skip_large_vocab:
        if args.k_full not in ks:
            cases.append((('small', args.k_full),
                          dict(small, label=f'POMP K={args.k_full} N={n}', k=args.k_full)))
        large_kind = 'random' if args.large_classes else 'all'
        cases.append((('large', args.k_full),
                      dict(base, vocab=large_kind, num_classes=args.large_classes,
                           label=f'POMP K={args.k_full} N={args.large_classes or 21841}',
                           k=args.k_full)))
    results = {}
    start = time.perf_counter()
    for i, (key, case) in enumerate(cases):
        _log(f'[{i + 1}/{len(cases)}] {case["label"]} ({time.perf_counter() - start:.0f} s)')
        results[key] = _run(case)
    _log(f'done in {time.perf_counter() - start:.0f} s')

    mem = 'CUDA max allocated' if cuda else 'peak RSS growth'
    vocab_desc = {'random': f'{n:,} random {args.vocabulary} names (seed 0)',
                  'first': f'the first {n:,} {args.vocabulary} names',
                  'imagenet1k': f'{n:,} imagenet1k names'}[args.small_vocab]
    print(f'# POMP pre-training step benchmark: random {args.model}, {args.precision}, on '
          f'{_device_name(args.device)}\n')
    print(f'Step = text side only: sample K classes, embed their K prompts (n_ctx {args.n_ctx}) '
          'with the frozen text tower, POMP loss against fixed precomputed image features of '
          f'{args.batch_size} images x {args.views} views, backward, SGD step on ctx. The frozen '
          'image tower (no grad) costs the same in every case and is not included. '
          f'Median of {args.steps} timed steps after {args.warmup} warm-up; all N prompts '
          f'tokenized before timing; memory = {mem} over all steps of the case, each case in a '
          f'fresh process. Text encoding: {_encoding(args)}.\n')

    full = results['full']
    print(f'(1) full softmax vs POMP at N={n:,} ({vocab_desc})\n')
    print('| loss | K | classes embedded / step | token positions / step | step time (s) | '
          'time ratio | peak mem (MB) | mem ratio |')
    print('|---|---|---|---|---|---|---|---|')
    rows = [('full softmax (CoOp)', '-', full)] + [('POMP', str(k), results[k]) for k in ks]
    for name, k, r in rows:
        print(f'| {name} | {k} | {r["contrasted"]} | {r["positions"]:,} | {r["step_s"]:.3f} | '
              f'{r["step_s"] / full["step_s"]:.2f} | {r["peak_mb"]:.0f} | '
              f'{r["peak_mb"] / max(full["peak_mb"], 1e-9):.2f} |')

    verdicts = []
    if 128 in ks:
        r = results[128]
        mem_ratio = r['peak_mb'] / max(full['peak_mb'], 1e-9)
        time_ratio = r['step_s'] / full['step_s']
        verdicts.append(f'K=128 vs full softmax, memory ratio {mem_ratio:.3f} (target <= 0.12, '
                        f'paper 0.19): {_verdict(mem_ratio <= 0.12)} (K/N = {128 / n:.3f}, token '
                        f'positions {r["positions"] / full["positions"]:.3f}: activation memory '
                        'follows the token positions run)')
        verdicts.append(f'K=128 vs full softmax, time ratio {time_ratio:.3f} (target <= 0.30, '
                        f'paper 0.46): {_verdict(time_ratio <= 0.30)}')

    if not args.skip_large_vocab:
        kf = args.k_full
        small_r = results[kf] if kf in ks else results[('small', kf)]
        large_r = results[('large', kf)]
        large_desc = (f'all {large_r["classes"]:,} {args.vocabulary} names'
                      if not args.large_classes else
                      f'{large_r["classes"]:,} random {args.vocabulary} names (seed 0)')
        print(f'\n(2) POMP K={kf:,}: N={n:,} vs N={large_r["classes"]:,} ({large_desc})\n')
        print('| N | classes embedded / step | token positions / step | longest prompt | '
              'step time (s) | time ratio | peak mem (MB) | mem ratio | kB per position |')
        print('|---|---|---|---|---|---|---|---|---|')
        per_token = {}
        for key, r in (('small', small_r), ('large', large_r)):
            per_token[key] = r['peak_mb'] * 1024 / r['positions']
            print(f'| {r["classes"]:,} | {r["contrasted"]} | {r["positions"]:,} | '
                  f'{r["max_tokens"]} | '
                  f'{r["step_s"]:.3f} | {r["step_s"] / small_r["step_s"]:.2f} | '
                  f'{r["peak_mb"]:.0f} | {r["peak_mb"] / max(small_r["peak_mb"], 1e-9):.3f} | '
                  f'{per_token[key]:.1f} |')
        ratio = large_r['peak_mb'] / max(small_r['peak_mb'], 1e-9)
        verdicts.append(f'K={kf} memory, N={large_r["classes"]:,} vs N={n:,}: ratio {ratio:.3f} '
                        f'(target within 5%): {_verdict(abs(ratio - 1) <= 0.05)}')
        norm = per_token['large'] / max(per_token['small'], 1e-9)
        verdicts.append(f'(diagnostic) the same per token position run through the text '
                        f'tower (the step\'s total own tokens + the shared prefix once): ratio '
                        f'{norm:.3f}: {_verdict(abs(norm - 1) <= 0.05)}')
    if verdicts:
        print('\nTargets' + (' (meant for the ViT-B-16 default; the tiny --quick model is '
                             'dominated by fixed overheads)' if args.quick else '') + ':\n')
        for line in verdicts:
            print(f'- {line}')


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
