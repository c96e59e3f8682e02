# The official POMP training step in the official n_ctx 16 / 20 epoch recipe
# (configs/trainers/POMP/vit_b16_ep20_randaug2.yaml, scripts/pomp/main.sh imagenet_21k
# vit_b16_ep20_randaug2 end 16 16 False 1000, seed 42): pomp_in21k-p_vit-b16_official.py with
# n_ctx 16 and the Dassl schedule over 20 epochs. Differences from our default recipe:
# docs/pretraining.md, "Official recipe".
_base_ = ['./pomp_in21k-p_vit-b16_official.py']

max_epochs = 20
model = dict(n_ctx=16)
# lists are replaced, not merged: the same Dassl schedule, rebuilt for 20 epochs
param_scheduler = [
    dict(type='ConstantLR', factor=1e-5 / 0.002, by_epoch=True, begin=0, end=2),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=0.0, by_epoch=True, begin=1,
         end=max_epochs),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
