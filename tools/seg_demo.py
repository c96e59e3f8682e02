"""Segment one image with an open-vocabulary mmseg model and write an overlay with a legend.

    python tools/seg_demo.py demo.jpg configs/mmseg/pomp_voc.py CKPT --out out.png
    python tools/seg_demo.py demo.jpg CONFIG CKPT --texts "cat . sofa . window" --out out.png

Without ``--texts`` the model's own vocabulary is used; with a single class, pixels are that
class or "no object" (left unpainted). The legend lists the predicted classes, largest area
first. The model is built from the config before the checkpoint is loaded, so the config's
CLIP weights and prompt file must be at hand although the checkpoint holds both.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('image', help='input image')
    p.add_argument('config', help='model config (e.g. configs/mmseg/pomp_voc.py)')
    p.add_argument('checkpoint', help='trained checkpoint')
    p.add_argument('--texts', help='classes to segment, " . "-separated ("cat . sofa . window"),'
                   ' a vocabulary file or a built-in vocabulary name')
    p.add_argument('--out', default='seg_demo.png', help='output PNG (default: %(default)s)')
    p.add_argument('--device', default=None, help='torch device (default: cuda:0 if available)')
    p.add_argument('--opacity', type=float, default=0.5, help='mask opacity (default: 0.5)')
    return p.parse_args(argv)


def palette_for(names: Sequence[str], meta: Optional[dict]) -> List[List[int]]:
    """A colour per class: the checkpoint's colour where the name is known, else a fixed
    pseudo-random one (seeded by the name, so a class keeps its colour across runs)."""
    known: Dict[str, List[int]] = {}
    if meta and meta.get('palette') is not None:
        known = {c: list(map(int, col)) for c, col in zip(meta['classes'], meta['palette'])}
    palette = []
    for name in names:
        if name in known:
            palette.append(known[name])
        else:
            seed = int.from_bytes(name.encode('utf-8')[:8].ljust(8, b'\0'), 'little') % 2**32
            palette.append(np.random.default_rng(seed).integers(0, 256, 3).tolist())
    return palette


def add_legend(image: np.ndarray, labels: np.ndarray, names: Sequence[str],
               palette: Sequence[Sequence[int]]) -> np.ndarray:
    """``image`` (RGB) with a white panel on the right listing the classes in ``labels``."""
    import cv2
    ids, counts = np.unique(labels[labels < len(names)], return_counts=True)
    order = [int(i) for i, _ in sorted(zip(ids, counts), key=lambda x: -x[1])]
    font, scale, row = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 22
    width = 30 + max([cv2.getTextSize(names[i], font, scale, 1)[0][0] for i in order] + [60])
    height = max(image.shape[0], row * len(order) + 10)
    canvas = np.full((height, image.shape[1] + width, 3), 255, np.uint8)
    canvas[:image.shape[0], :image.shape[1]] = image
    x0 = image.shape[1] + 8
    for k, i in enumerate(order):
        y = 8 + k * row
        cv2.rectangle(canvas, (x0, y), (x0 + 14, y + 14), tuple(int(c) for c in palette[i]), -1)
        cv2.putText(canvas, names[i], (x0 + 20, y + 12), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def main(argv=None) -> str:
    """Run the demo; returns the output path."""
    return segment(argv)[0]


def segment(argv=None) -> Tuple[str, np.ndarray, List[str]]:
    """Run the demo; returns the output path, the predicted label map and the class names."""
    args = parse_args(argv)
    import pomp_mm  # noqa: F401  registers PompTextEncoder; safe checkpoint loading
    import mmcv
    import torch
    from mmengine.config import Config
    from mmseg.apis import inference_model, init_model
    from mmseg.visualization import SegLocalVisualizer

    from pomp_mm.cli import check_config_inputs
    from pomp_mm.vocabulary import parse_vocabulary

    for what, path in (('image', args.image), ('checkpoint', args.checkpoint)):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{what} not found: {path!r}')
    cfg = Config.fromfile(args.config)
    check_config_inputs(cfg)  # the model is built from the config before the checkpoint loads
    device = args.device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    model = init_model(cfg, args.checkpoint, device=device)
    meta = getattr(model, 'dataset_meta', None)
    if args.texts:
        if not hasattr(model, 'set_vocabulary'):
            raise SystemExit(f'--texts needs a model that can switch vocabularies, such as '
                             f'OpenVocabEncoderDecoder; got {type(model).__name__}')
        model.set_vocabulary(parse_vocabulary(args.texts))
        names = list(model.class_names)
    else:
        names = list(model.class_names if hasattr(model, 'class_names') else meta['classes'])
    palette = palette_for(names, meta)
    model.dataset_meta = dict(classes=names, palette=palette)

    image = mmcv.imread(args.image, channel_order='rgb')
    with torch.no_grad():
        result = inference_model(model, args.image)
    vis = SegLocalVisualizer.get_instance('pomp_seg_demo', alpha=args.opacity)
    vis.dataset_meta = model.dataset_meta
    vis.add_datasample('demo', image, result, draw_gt=False, draw_pred=True, with_labels=False)
    labels = result.pred_sem_seg.data[0].cpu().numpy()
    drawn = add_legend(vis.get_image(), labels, names, palette)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    mmcv.imwrite(drawn[..., ::-1], args.out)  # RGB -> BGR for OpenCV
    print(f'wrote {args.out} ({len(np.unique(labels))} classes shown)')
    return args.out, labels, names


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
