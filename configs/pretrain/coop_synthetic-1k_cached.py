# coop_synthetic-1k.py trained from its image-feature cache (what make demo runs).
_base_ = ['./coop_synthetic-1k.py']

train_dataloader = dict(
    collate_fn=dict(type='collate_features'),
    dataset=dict(_delete_=True, type='CachedFeatures', cache_dir={{ _base_.feature_dir }}))
