"""Per-image inference time of the SAN segmenter with PompTextEncoder vs mmseg's
CLIPTextEncoder, both with cached class embeddings, on the same tiny model in one run.

Both models are built from configs/mmseg/pomp_voc.py shrunk to tiny towers (random weights,
64x64 images); they share every weight but the text encoder (copied across). Each image is run
through both models back to back, in alternating order, and the ratio is the median of the
per-pair ratios, so drift on a busy machine hits both alike. Target: ratio <= 1.02.

    python tools/benchmarks/seg_head.py [--images 10] [--rounds 20] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from pomp_mm._benchmarking import paired_times

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VOC = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
       'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
       'train', 'tvmonitor')



def build(text_encoder: dict, device: str):
    """The tiny pomp_voc model with ``text_encoder``; same seed, so same non-text weights."""
    import pomp_mm.mmseg  # noqa: F401  registers the SAN adapters
    from pomp_mm.testing import TINY_SAN
    from mmengine.config import Config, ConfigDict
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope('mmseg')
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'mmseg', 'pomp_voc.py'))
    cfg.merge_from_dict(dict(model=TINY_SAN))
    if text_encoder['type'] == 'PompTextEncoder':
        text_encoder = dict(text_encoder, clip_model='tiny')
    model_cfg = cfg.model
    model_cfg.text_encoder = ConfigDict(text_encoder)  # SAN reads its configs by attribute
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    return model.to(device).eval()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--images', type=int, default=10, help='images per round')
    p.add_argument('--rounds', type=int, default=20)
    p.add_argument('--size', type=int, default=64, help='image side')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args(argv)
    from mmseg.structures import SegDataSample

    text = {
        'pomp_mm PompTextEncoder': dict(type='PompTextEncoder', vocabulary=list(VOC),
                                        templates='vild', cat_bg=True, cache_feature=True),
        "mmseg CLIPTextEncoder": dict(type='CLIPTextEncoder', vocabulary=list(VOC),
                                      templates='vild', embed_dims=64, num_layers=2,
                                      num_heads=2, output_dims=32, cat_bg=True,
                                      cache_feature=True),
    }
    models = {name: build(cfg, args.device) for name, cfg in text.items()}
    first, second = models.values()
    shared = {k: v for k, v in first.state_dict().items() if not k.startswith('text_encoder.')}
    second.load_state_dict(shared, strict=False)  # identical image encoder and head weights
    torch.manual_seed(1)
    images = torch.rand(args.images, 3, args.size, args.size, device=args.device) * 255
    meta = dict(img_shape=(args.size, args.size), ori_shape=(args.size, args.size),
                pad_shape=(args.size, args.size), padding_size=[0, 0, 0, 0])

    def one(model, img) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            sample = SegDataSample(metainfo=meta)
            data = model.data_preprocessor({'inputs': [img], 'data_samples': [sample]})
            model.predict(data['inputs'], data['data_samples'])
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1000

    names = list(models)
    for name in names:  # warm-up: fills the class-embedding caches
        for img in images:
            one(models[name], img)
    times, ratios = paired_times({name: (lambda img, m=models[name]: one(m, img))
                                  for name in names}, images, args.rounds)
    print(f'# SAN inference per image: tiny model, {args.size}x{args.size}, {args.device}, '
          f'{args.images} images x {args.rounds} rounds, back-to-back pairs\n')
    print('| text encoder | median ms / image |')
    print('|---|---|')
    for name in names:
        print(f'| {name} | {statistics.median(times[name]):.2f} |')
    ratio = statistics.median(ratios)
    print(f'\nmedian per-pair time ratio (pomp_mm / mmseg): {ratio:.3f}')
    print(f'Target: ratio <= 1.02: {"PASS" if ratio <= 1.02 else "FAIL"}')


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
