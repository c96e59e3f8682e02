"""Bake a detector's class embeddings into a plain linear layer, so it needs no text tower.

    python tools/bake_detector.py CONFIG CKPT --out-dir baked/
    python tools/bake_detector.py CONFIG CKPT --out-dir baked_mugs/ --texts "mug . webcam"

Every ZeroShotClassifier's test-vocabulary embeddings (or those of ``--texts`` /
``--embeddings``) become the weight of an ``nn.Linear``; the tool writes ``baked.py`` (the
config, with the text encoder removed) and ``baked.pth``, then runs both models on one image
(``--check-image``, else a random one) and fails unless their detections are identical.
"""
from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Tuple



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('config', help='detector config with a PompBBoxHead / ZeroShotClassifier')
    p.add_argument('checkpoint', help='trained checkpoint')
    p.add_argument('--out-dir', required=True, help='where baked.py and baked.pth go')
    p.add_argument('--texts', help='bake this vocabulary instead of the test vocabulary')
    p.add_argument('--embeddings', help='bake this class-embedding .npy instead')
    p.add_argument('--check-image', help='image for the before/after check (default: random)')
    return p.parse_args(argv)


def _classifier_cfgs(model_cfg: Any) -> List[Tuple[Any, str]]:
    """(head config, key) pairs holding a ZeroShotClassifier config, in module order."""
    heads = model_cfg.get('roi_head', {}).get('bbox_head')
    heads = heads if isinstance(heads, (list, tuple)) else [heads]
    found = []
    for head in heads:
        if head is None:
            continue
        if head.get('type') == 'PompBBoxHead':
            found.append((head, 'classifier'))
        elif (head.get('cls_predictor_cfg') or {}).get('type') == 'ZeroShotClassifier':
            found.append((head, 'cls_predictor_cfg'))
    return found


def bake(cfg: Any, model: Any) -> Tuple[Any, Dict[str, Any]]:
    """The baked config and state dict for ``model`` (built from ``cfg``, in eval mode)."""
    import torch

    from pomp_mm.mmdet.classifier import ZeroShotClassifier
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, ZeroShotClassifier)]
    cfgs = _classifier_cfgs(cfg.model)
    if not modules or len(modules) != len(cfgs):
        raise SystemExit(f'found {len(modules)} ZeroShotClassifier modules but {len(cfgs)} '
                         'bbox heads configured with one; nothing to bake')
    baked_cfg = copy.deepcopy(cfg)
    state = dict(model.state_dict())
    for (name, clf), (head, key) in zip(modules, _classifier_cfgs(baked_cfg.model)):
        if clf.train_source is None:
            raise SystemExit(f'{name} is baked already')
        with torch.no_grad():
            weight = clf.class_weight().detach().clone()
        names = clf.vocabulary_for(False)[1]
        new = dict(baked=True, embed_dim=clf.embed_dim, temperature=clf.temperature,
                   bias_init=None if clf.bias is None else float(clf.bias))
        if names is not None:  # a names-less .npy stays names-less (no 'class 0' placeholders)
            new['vocabulary'] = list(names)
        if key == 'cls_predictor_cfg':
            new['type'] = 'ZeroShotClassifier'
        head[key] = new
        head['num_classes'] = clf.num_classes
        state[f'{name}.fixed.weight'] = weight
    return baked_cfg, state


def _check_input(path, size: int = 320):
    import numpy as np
    if path:
        import mmcv
        return mmcv.imread(path)
    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)


def main(argv=None) -> Tuple[str, str]:
    """Bake; returns the config and checkpoint paths."""
    args = parse_args(argv)
    import torch
    from mmdet.apis import inference_detector, init_detector
    from mmengine.config import Config

    import pomp_mm  # noqa: F401
    from pomp_mm.mmdet import set_detector_vocabulary

    model = init_detector(args.config, args.checkpoint, device='cpu')
    dataset_meta = None
    if args.texts or args.embeddings:
        set_detector_vocabulary(model, args.texts, args.embeddings)
    else:  # the checkpoint's names for the test vocabulary (DetVocabularyCheckHook wrote them)
        dataset_meta = getattr(model, 'dataset_meta', None)
    cfg = model.cfg
    baked_cfg, state = bake(cfg, model)
    os.makedirs(args.out_dir, exist_ok=True)
    cfg_path = osp.join(args.out_dir, 'baked.py')
    ckpt_path = osp.join(args.out_dir, 'baked.pth')
    baked_cfg.dump(cfg_path)
    names = tuple(_classes_of(model, dataset_meta))
    torch.save({'state_dict': state, 'meta': {'dataset_meta': {'classes': names},
                                              'baked_from': osp.abspath(args.checkpoint)}},
               ckpt_path)

    baked = init_detector(Config.fromfile(cfg_path), ckpt_path, device='cpu')
    image = _check_input(args.check_image)
    with torch.no_grad():
        before = inference_detector(model, image).pred_instances
        after = inference_detector(baked, image).pred_instances
    same = all(torch.equal(before[k], after[k]) for k in ('bboxes', 'scores', 'labels'))
    if not same:
        raise SystemExit('baked model does not reproduce the original detections; not safe '
                         f'to use {ckpt_path}')
    print(f'baked {len(names)} classes into {ckpt_path} and {cfg_path}; '
          f'{len(before)} detections identical before and after')
    return cfg_path, ckpt_path


def _classes_of(model, dataset_meta: Optional[Dict[str, Any]] = None) -> List[str]:
    """Names for the baked checkpoint's ``dataset_meta``: the vocabulary's own, else those of
    the original checkpoint's ``dataset_meta`` when they fit, else ``'class i'``."""
    from pomp_mm.mmdet.classifier import zero_shot_classifiers
    size, names = zero_shot_classifiers(model)[0].vocabulary_for(False)
    if names is not None:
        return names
    known = list((dataset_meta or {}).get('classes') or ())
    return known if len(known) == size else [f'class {i}' for i in range(size)]


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
