"""Detect any vocabulary in one image with an open-vocabulary mmdet model and draw the boxes.

    python tools/det_demo.py demo.jpg configs/mmdet/pomp_mask-rcnn_r50_fpn_lvis-base.py CKPT \\
        --texts "headphone . webcam . mug" --out out.png
    python tools/det_demo.py demo.jpg CONFIG CKPT --texts lvis --score-thr 0.3 --out out.png

``--texts`` takes " . "-separated names, a vocabulary file or a built-in vocabulary name;
without it the config's test vocabulary is used. Boxes, labels (and masks, for Mask R-CNN) are
drawn with mmdet's ``DetLocalVisualizer``. The same model works in mmdet's ``DetInferencer``:
``set_detector_vocabulary(inferencer.model, texts)`` and set ``inferencer.visualizer
.dataset_meta`` to the returned names.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Any, List, Tuple



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('image', help='input image')
    p.add_argument('config', help='model config (e.g. configs/mmdet/pomp_faster-rcnn_r50_fpn_'
                   'ov-coco.py)')
    p.add_argument('checkpoint', help='trained checkpoint')
    p.add_argument('--texts', help='classes to detect: " . "-separated ("mug . webcam"), a '
                   'vocabulary file or a built-in vocabulary name')
    p.add_argument('--embeddings', help='a class-embedding .npy to detect with instead of '
                   '--texts (e.g. from tools/export_embeddings.py)')
    p.add_argument('--out', default='det_demo.png', help='output image (default: %(default)s)')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='draw detections above this score (default: %(default)s)')
    p.add_argument('--device', default=None, help='torch device (default: cuda:0 if available)')
    return p.parse_args(argv)


def main(argv=None) -> str:
    """Run the demo; returns the output path."""
    return detect(argv)[0]


def detect(argv=None) -> Tuple[str, Any, List[str]]:
    """Run the demo; returns the output path, the detections (mmengine ``InstanceData``: boxes,
    scores, labels indexing the names) and the class names."""
    args = parse_args(argv)
    import mmcv
    import torch
    from mmdet.apis import inference_detector, init_detector
    from mmengine.config import Config
    from mmdet.visualization import DetLocalVisualizer

    import pomp_mm  # noqa: F401  safe checkpoint loading under torch >= 2.6
    from pomp_mm.mmdet import set_detector_vocabulary
    from pomp_mm.mmdet.classifier import zero_shot_classifiers

    from pomp_mm.cli import check_config_inputs

    if not osp.isfile(args.image):
        raise SystemExit(f'image not found: {args.image!r}')
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint!r}')
    cfg = Config.fromfile(args.config)
    check_config_inputs(cfg)  # the model is built from the config before the checkpoint loads
    device = args.device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    model = init_detector(cfg, args.checkpoint, device=device)
    if args.texts or args.embeddings:
        names = set_detector_vocabulary(model, args.texts, args.embeddings)
    else:
        heads = zero_shot_classifiers(model)
        names = heads[0].class_names if heads else list(model.dataset_meta['classes'])
    model.dataset_meta = dict(classes=tuple(names), palette='random')

    with torch.no_grad():
        result = inference_detector(model, args.image)
    vis = DetLocalVisualizer.get_instance('pomp_det_demo')
    vis.dataset_meta = model.dataset_meta
    image = mmcv.imread(args.image, channel_order='rgb')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    vis.add_datasample('demo', image, result, draw_gt=False, pred_score_thr=args.score_thr,
                       out_file=args.out)
    kept = result.pred_instances[result.pred_instances.scores > args.score_thr]
    found = sorted({names[i] for i in kept.labels.tolist()})
    print(f'wrote {args.out}: {len(kept)} detections above {args.score_thr}'
          + (f' ({", ".join(found)})' if found else ''))
    return args.out, result.pred_instances, names


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
