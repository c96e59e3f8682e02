"""One row per text-tower family: a POMP prompt through open_clip CLIP, Hugging Face CLIP and
SigLIP towers of their ViT-B sizes (random weights, no download), side by side in one process.

For each family: embed ``--names`` ImageNet-21K names with a 16-token prompt (no grad), and one
training step's text side for ``--step-classes`` of them (embed with grad, a loss, backward to
``ctx``; SigLIP keeps every layer's activations of 64 positions per class: 1,000 classes would
take ~35 GB here).
Towers: open_clip ``ViT-B-16``'s text tower (512 wide, 12 layers, 77 positions), a Hugging Face
``CLIPModel`` with ``clip-vit-base-patch32``'s text config (the same shape; mapped onto open_clip
by :mod:`pomp_mm.towers.hf_clip`), and a SigLIP tower with ``ViT-B-16-SigLIP``'s text shape
(768 wide, 12 layers, 64 positions, bidirectional; the test suite's small tokenizer, so names
split into more pieces than with SigLIP's own). CLIP-style towers run ``attention='auto'`` (the
shared prefix once, own tokens packed); SigLIP runs every prompt's whole 64-token context.

    python tools/benchmarks/families.py [--names 1000] [--device cuda]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings

import torch


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _encoders(folder: str, names, device: str):
    from pomp_mm import PompTextEncoder
    from pomp_mm.testing import tiny_hf_clip, tiny_siglip_config, write_siglip_tokenizer
    hf = tiny_hf_clip(os.path.join(folder, 'hf'), hidden_size=512, intermediate_size=2048,
                      num_hidden_layers=12, num_attention_heads=8)
    tok = write_siglip_tokenizer(os.path.join(folder, 'siglip_tok'))
    siglip = tiny_siglip_config(tok, width=768, heads=12, layers=12)
    specs = [('open_clip CLIP (ViT-B-16 text)', 'ViT-B-16'),
             ('Hugging Face CLIP (clip-vit-base-patch32 text)', 'transformers:' + hf),
             ('SigLIP (ViT-B-16-SigLIP text shape)', siglip)]
    for label, spec in specs:
        torch.manual_seed(0)
        enc = PompTextEncoder(clip_model=spec, vocabulary=names, n_ctx=16, cat_bg=False,
                              prompt_trainable=True).to(device)
        yield label, enc


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--names', type=int, default=1000, help='class names per call')
    p.add_argument('--step-classes', type=int, default=256, help='classes of the step')
    p.add_argument('--device', default='cpu')
    p.add_argument('--repeats', type=int, default=2, help='timed calls (best reported)')
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings('ignore')
    from pomp_mm.vocabulary import load_vocabulary
    vocab = load_vocabulary('imagenet21k')
    gen = torch.Generator().manual_seed(0)
    names = [vocab.names[i] for i in torch.randperm(len(vocab), generator=gen)[:args.names]]
    ids = torch.arange(len(names))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, enc in _encoders(folder, names, args.device):
            tower = enc.tower
            print(f'[families] {label}', file=sys.stderr, flush=True)
            enc.encode_classes(ids[:8]).sum().backward()  # table built, kernels warm
            enc.prompt_learner.ctx.grad = None
            best_embed = best_step = float('inf')
            for _ in range(args.repeats):
                _sync(args.device)
                start = time.perf_counter()
                with torch.no_grad():
                    enc.encode_classes(ids)
                _sync(args.device)
                best_embed = min(best_embed, time.perf_counter() - start)
                start = time.perf_counter()
                emb = enc.encode_classes(ids[:args.step_classes])
                (emb @ emb[:1].T).sum().backward()
                _sync(args.device)
                best_step = min(best_step, time.perf_counter() - start)
                enc.prompt_learner.ctx.grad = None
            lengths = enc.token_table().lengths.float()
            shared = enc.share_prefix and tower.shares_prefix and \
                enc.prompt_learner.has_shared_prefix
            # own tokens per class past the shared prefix; whole prompts otherwise
            positions = (lengths.mean() - (enc.prompt_learner.n_ctx + 1) if shared else
                         float(lengths.mean() if tower.causal else tower.context_length))
            rows.append((label, f'{tower.width} x {len(tower.transformer.resblocks)}',
                         enc.attention_mode() if shared else 'whole prompts',
                         float(positions), best_embed, best_step))
            del enc
    device = torch.cuda.get_device_name() if args.device.startswith('cuda') else \
        f'CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)'
    print(f'# A POMP prompt per text-tower family, on {device}\n')
    print(f'{args.names:,} random ImageNet-21K names embedded, n_ctx 16, random weights; best '
          f'of {args.repeats}. Step = {args.step_classes} of them embedded with grad + backward '
          'to ctx.\n')
    print('| tower | width x layers | path | positions per class | embed (s) | step (s) '
          '| step vs open_clip |')
    print('|---|---|---|---:|---:|---:|---:|')
    base = rows[0][5]
    for label, dims, path, pos, embed, step in rows:
        print(f'| {label} | {dims} | {path} | {pos:.1f} | {embed:.3f} | {step:.3f} | '
              f'{step / base:.2f} |')


if __name__ == '__main__':
    main()
