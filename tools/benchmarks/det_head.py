"""Per-image inference time of a Faster R-CNN with the POMP zero-shot head (PompBBoxHead) vs a
plain Shared2FCBBoxHead with the same number of classes, in one run.

Both detectors come from configs/mmdet/pomp_faster-rcnn_r50_fpn_ov-coco.py with random weights
(R50-FPN, or ``--tiny``) and share every weight except the classifier; both regress boxes
class-agnostically, so the classification branch is the only difference. The POMP head reads
its class embeddings from a random ``--classes`` x 512 .npy, which is what the text encoder's
output amounts to after the first call (it is computed once and cached). Each image runs
through both back to back, in alternating order; the ratio is the median per-pair ratio.
Target: ratio <= 1.05.

    python tools/benchmarks/det_head.py [--classes 1203] [--images 5] [--rounds 3] [--size 512]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from pomp_mm._benchmarking import paired_times

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIG = os.path.join(ROOT, 'configs', 'mmdet', 'pomp_faster-rcnn_r50_fpn_ov-coco.py')


def build_pair(num_classes: int, npy: str, tiny: bool, score_thr: float, device: str):
    """(POMP detector, plain detector) with identical weights outside the classifier."""
    import pomp_mm.mmdet  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from pomp_mm.testing import tiny_detector
    init_default_scope('mmdet')
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(dict(model=dict(backbone=dict(init_cfg=None),
                                        test_cfg=dict(rcnn=dict(score_thr=score_thr)))))
    if tiny:
        cfg.merge_from_dict(dict(model=tiny_detector()))
    pomp_cfg = copy.deepcopy(cfg.model)
    head = pomp_cfg.roi_head.bbox_head
    head.num_classes = num_classes
    head.classifier = dict(embeddings=npy, temperature=50.0)
    plain_cfg = copy.deepcopy(pomp_cfg)
    plain_head = plain_cfg.roi_head.bbox_head
    plain_head.type = 'Shared2FCBBoxHead'
    plain_head.pop('classifier')
    torch.manual_seed(0)
    pomp = MODELS.build(pomp_cfg)
    plain = MODELS.build(plain_cfg)
    shared = {k: v for k, v in pomp.state_dict().items() if '.fc_cls.' not in k}
    missing, _ = plain.load_state_dict(shared, strict=False)
    assert all('.fc_cls.' in k for k in missing), missing
    return pomp.to(device).eval(), plain.to(device).eval()


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--classes', type=int, default=1203, help='vocabulary size (LVIS: 1203)')
    p.add_argument('--images', type=int, default=5, help='images per round')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--size', type=int, default=512, help='image side')
    p.add_argument('--score-thr', type=float, default=0.05, help="rcnn score_thr (mmdet's)")
    p.add_argument('--tiny', action='store_true', help='tiny ResNet-18/8 detector (a smoke run)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args(argv)
    from mmdet.structures import DetDataSample

    with tempfile.TemporaryDirectory() as tmp:
        npy = os.path.join(tmp, 'embeddings.npy')
        np.save(npy, np.random.default_rng(0).standard_normal((args.classes, 512))
                .astype(np.float32))
        models = dict(zip(('POMP (PompBBoxHead)', 'plain Shared2FCBBoxHead'),
                          build_pair(args.classes, npy, args.tiny, args.score_thr,
                                     args.device)))
    torch.manual_seed(1)
    images = (torch.rand(args.images, 3, args.size, args.size) * 255).to(torch.uint8)
    meta = dict(img_shape=(args.size, args.size), ori_shape=(args.size, args.size),
                scale_factor=(1.0, 1.0))

    def one(model, img) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            data = model.data_preprocessor(
                {'inputs': [img.to(args.device)], 'data_samples': [DetDataSample(metainfo=meta)]})
            model.predict(data['inputs'], data['data_samples'])
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1000

    names = list(models)
    for name in names:  # warm-up (and the POMP head's one-off embedding load)
        one(models[name], images[0])
    times, ratios = paired_times({name: (lambda img, m=models[name]: one(m, img))
                                  for name in names}, images, args.rounds)
    arch = 'tiny ResNet-18/8 FPN' if args.tiny else 'R50-FPN'
    print(f'# Faster R-CNN {arch} inference per image: {args.classes} classes, '
          f'{args.size}x{args.size}, {args.device}, {args.images} images x {args.rounds} rounds, '
          'back-to-back pairs\n')
    print('| bbox head | median ms / image |')
    print('|---|---|')
    for name in names:
        print(f'| {name} | {statistics.median(times[name]):.1f} |')
    ratio = statistics.median(ratios)
    print(f'\nmedian per-pair time ratio (POMP / plain): {ratio:.3f}')
    print(f'Target: ratio <= 1.05: {"PASS" if ratio <= 1.05 else "FAIL"}')
    return ratio


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
