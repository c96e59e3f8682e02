"""Precompute the frozen CLIP image features of a pre-training config's dataset.

    python tools/cache_features.py configs/pretrain/pomp_in21k-p_vit-b16.py \\
        --out-dir data/in21k-p_features --num-views 2
    # interrupted? the same command finishes the missing shards only

The model (for its image tower) and the dataset (with its training augmentation) come from the
config; each image gets --num-views augmented views, fixed for the whole run. Train from the
cache by pointing the config's train_dataloader at it (the command prints the snippet).
"""
from __future__ import annotations

import argparse
import os.path as osp



def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('config', help='pre-training config file')
    p.add_argument('--out-dir', required=True, help='cache folder (resumed if it exists)')
    p.add_argument('--num-views', type=int, default=None,
                   help="augmented views per image (default: the dataset's num_views)")
    p.add_argument('--batch-size', type=int, default=64, help='images per image-tower call')
    p.add_argument('--shard-size', type=int, default=4096, help='images per shard file')
    p.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    p.add_argument('--num-workers', type=int, default=None,
                   help="image decoding workers (default: the config's train_dataloader's)")
    p.add_argument('--seed', type=int, default=0, help='augmentation seed')
    p.add_argument('--dtype', choices=['float16', 'float32'], default='float16',
                   help='feature storage dtype')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, e.g. train_dataloader.dataset.shots=4')
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import pomp_mm  # noqa: F401  registers models and datasets
    import pomp_mm.pretrain  # noqa: F401
    import torch
    from mmengine.config import Config
    from mmengine.registry import DATASETS, MODELS
    from mmengine.runner import set_random_seed

    from pomp_mm.pretrain.feature_cache import build_feature_cache

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # Runner seeds before building the model: a randomly initialised tower (tests, no
    # pretrained weights) then equals the one the training run builds from the same config
    seed = (cfg.get('randomness') or {}).get('seed')
    if seed is not None:
        set_random_seed(seed)
    model = MODELS.build(cfg.model)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    # fail before hours of encoding, not at the start of training
    model.check_label_space((getattr(dataset, 'metainfo', None) or {}).get('classes'))
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    workers = args.num_workers
    if workers is None:
        workers = cfg.train_dataloader.get('num_workers', 0)
    meta = build_feature_cache(model, dataset, args.out_dir, num_views=args.num_views,
                               batch_size=args.batch_size, shard_size=args.shard_size,
                               device=device, num_workers=workers, seed=args.seed,
                               dtype=args.dtype)
    out = osp.abspath(args.out_dir)
    print(f'feature cache: {out}\n  {meta["num_images"]} images x {meta["num_views"]} views x '
          f'{meta["feature_dim"]} dims ({meta["dtype"]}) in {meta["num_shards"]} shards; '
          f'{meta["skipped_images"]} unreadable images skipped; image tower '
          f'{meta["model_id"]} (fingerprint {meta["visual_fingerprint"]})')
    print(f"""
Train from it with a config like (same model settings; the image tower is not run):

_base_ = [{osp.abspath(args.config)!r}]
custom_imports = dict(imports=['pomp_mm', 'pomp_mm.pretrain'], allow_failed_imports=False)
train_dataloader = dict(
    dataset=dict(_delete_=True, type='CachedFeatures', cache_dir={out!r}),
    collate_fn=dict(type='collate_features'))
""")
    return meta


if __name__ == '__main__':
    from pomp_mm.cli import run
    run(main)
