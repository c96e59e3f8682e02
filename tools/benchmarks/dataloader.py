"""What one DataLoader worker delivers for the ImageNet-21K pre-training pipeline (no download).

The pipeline is the configs' (``configs/pretrain/pomp_in21k-p_vit-b16.py``): ``ImageNet21K``
(winter21 layout) decoding a JPEG, then ``num_views`` times RandomResizedCrop(224) + flip +
Dassl's RandAugment2 + normalise. Images are generated JPEGs of ImageNet's typical size
(500 x 375, quality 90, smooth content so that they compress like photographs; their mean file
size is printed). A DataLoader worker runs single-threaded, so the per-worker rate is measured
in this process with one torch thread; then a DataLoader with ``--workers`` workers checks how
that scales on this machine. The table says how many workers a step that consumes
``--target`` image-views/s needs.

    python tools/benchmarks/dataloader.py                 # ~1 min on 2 cores
    python tools/benchmarks/dataloader.py --images 256 --workers 2 --target 4000
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_images(root: str, wnids, per_class: int, seed: int = 0) -> float:
    """JPEGs in ``root/imagenet21k_train/<wnid>/``; returns the mean file size in KB."""
    from PIL import Image
    rng = np.random.RandomState(seed)
    sizes = []
    for wnid in wnids:
        folder = os.path.join(root, 'imagenet21k_train', wnid)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            # low-frequency colour field + fine grain: compresses like a photograph
            base = Image.fromarray(rng.randint(0, 255, (12, 16, 3), dtype=np.uint8))
            img = np.asarray(base.resize((500, 375), Image.BICUBIC), dtype=np.float32)
            img += rng.normal(0, 6, img.shape)
            path = os.path.join(folder, f'{wnid}_{i}.JPEG')
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)
            sizes.append(os.path.getsize(path))
    return statistics.mean(sizes) / 1024


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=128, help='images generated and read')
    p.add_argument('--views', type=int, default=4, help='augmented views per image')
    p.add_argument('--workers', type=int, default=2, help='DataLoader workers of the check')
    p.add_argument('--target', type=int, default=4000,
                   help='image-views/s a training step consumes')
    p.add_argument('--randaugment', default='dassl', choices=['dassl', 'torchvision'])
    args = p.parse_args(argv)

    from pomp_mm.pretrain.data import ImageNet21K, build_transform, collate_views
    from pomp_mm.vocabulary import load_vocabulary
    wnids = load_vocabulary('imagenet21k-p').ids[:8]
    with tempfile.TemporaryDirectory() as root:
        kb = write_images(root, wnids, math.ceil(args.images / len(wnids)))
        data = ImageNet21K(root, layout='winter21', split='train', shots=None,
                           num_views=args.views, randaugment=args.randaugment)
        n = len(data)
        _log(f'{n} JPEGs, mean {kb:.0f} KB')

        # one worker's share: decode + views, single-threaded as in a worker process
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        from PIL import Image
        transform = build_transform(True, 224, randaugment=args.randaugment)
        data[0]  # warm-up (imports, first allocations)
        start = time.perf_counter()
        for i in range(n):
            data[i]
        item_s = (time.perf_counter() - start) / n
        start = time.perf_counter()
        for path, _ in data.items:
            with Image.open(path) as img:
                img.convert('RGB')
        decode_s = (time.perf_counter() - start) / n
        with Image.open(data.items[0][0]) as img:
            img = img.convert('RGB')
        start = time.perf_counter()
        for _ in range(n):
            transform(img)
        view_s = (time.perf_counter() - start) / n
        torch.set_num_threads(threads)

        # the real thing: a DataLoader with several workers, batches of 32 images
        loader = torch.utils.data.DataLoader(data, batch_size=32, num_workers=args.workers,
                                             collate_fn=collate_views, shuffle=False)
        start = time.perf_counter()
        seen = sum(b['inputs'].shape[0] for b in loader)
        loader_s = time.perf_counter() - start  # includes starting the workers

    per_worker = args.views / item_s
    needed = math.ceil(args.target / per_worker)
    print(f'# DataLoader throughput, ImageNet-21K pipeline, on CPU ({os.cpu_count()} cores, '
          f'torch {torch.__version__})\n')
    print(f'{n} generated 500 x 375 JPEGs (mean {kb:.0f} KB), {args.views} views each '
          f'(RandomResizedCrop 224 + flip + {args.randaugment} RandAugment2 + normalise); one '
          f'worker = this process, 1 torch thread.\n')
    print('| decode (ms/image) | one view (ms) | image + views (ms) | image-views/s, one worker '
          f'| DataLoader, {args.workers} workers (image-views/s) | workers for '
          f'{args.target:,} views/s |')
    print('|---:|---:|---:|---:|---:|---:|')
    print(f'| {decode_s * 1e3:.1f} | {view_s * 1e3:.1f} | {item_s * 1e3:.1f} | '
          f'{per_worker:,.0f} | {seen * args.views / loader_s:,.0f} | {needed} |')


if __name__ == '__main__':
    main()
