# pomp_synthetic.py trained from its image-feature cache (what make demo runs):
#   python tools/cache_features.py configs/pretrain/pomp_synthetic.py \
#       --out-dir work_dirs/world/pretrain/features
# The frozen image tower then never runs during training (one fixed view per image, which is
# what the un-augmented dataset gives anyway).
_base_ = ['./pomp_synthetic.py']

train_dataloader = dict(
    collate_fn=dict(type='collate_features'),
    dataset=dict(_delete_=True, type='CachedFeatures',
                 cache_dir={{ _base_.feature_dir }}))
