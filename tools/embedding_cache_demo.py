"""Embed a vocabulary with a CLIP text tower twice (text tower, then the on-disk cache) and
print what happened (the embedding cache at work; ``make demo`` is tools/synthetic/demo.py).

By default the committed synthetic-world CLIP embeds its 24,000 class names; ``--clip-model
tiny --vocab imagenet21k`` uses a tiny random CLIP on the ImageNet-21K names. With real weights::

    python tools/embedding_cache_demo.py --clip-model ViT-B-16 --pretrained openai \
        --prompt pomp_vit_b16.pth.tar --vocab imagenet21k
"""
from __future__ import annotations

import argparse
import time

import torch


from pomp_mm import PompTextEncoder
from pomp_mm.clip import resolve_clip_spec
from pomp_mm.embedding_cache import default_cache_dir


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--vocab', default='synthetic-24k',
                   help='built-in name, file or "a . b . c"')
    p.add_argument('--clip-model', default=None,
                   help="open_clip name, config .json or 'tiny' (default: the synthetic world's "
                   "committed CLIP)")
    p.add_argument('--pretrained', default=None, help='open_clip tag or local weights file')
    p.add_argument('--prompt', default=None, help='prompt checkpoint (default: a new prompt '
                   'initialised from "a photo of a")')
    p.add_argument('--cache-dir', default=default_cache_dir())
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.clip_model is None:
        from pomp_mm.synthetic.world_clip import MODEL_NAME, world_clip_weights
        args.clip_model, args.pretrained = MODEL_NAME, args.pretrained or world_clip_weights()
    torch.manual_seed(0)
    kwargs = dict(prompt=args.prompt) if args.prompt else dict(ctx_init='a photo of a')
    encoder = PompTextEncoder(clip_model=resolve_clip_spec(args.clip_model), cat_bg=False,
                              pretrained=args.pretrained, vocabulary=args.vocab,
                              cache_dir=args.cache_dir, prompt_trainable=False,
                              **kwargs).to(args.device).eval()
    names = list(encoder.vocabulary.names)
    rows = []
    with torch.no_grad():
        for attempt in ('first call', 'second call'):
            start = time.perf_counter()
            table = encoder.encode_text(encoder.vocabulary)
            rows.append((attempt, time.perf_counter() - start))
    print(f'vocabulary   : {args.vocab} ({len(names)} classes, e.g. {names[:3]})')
    print(f'model        : {encoder.model_id}, prompt: {args.prompt or "ctx_init=a photo of a"}')
    print(f'embeddings   : {tuple(table.shape)} {table.dtype}, '
          f'row norms {table.norm(dim=-1).min():.4f}..{table.norm(dim=-1).max():.4f}')
    for attempt, seconds in rows:
        print(f'{attempt:13s}: {seconds:.3f} s')
    print(f'cache file   : {encoder.cache_file(names)}')


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
