# POMP on ImageNet-21K-P, the official n_ctx 16 / 20 epoch setting (amazon-science/
# prompt-pretraining configs/trainers/POMP/vit_b16_ep20_randaug2.yaml; 65.1 cross-dataset mean in
# its docs/MODELS.md). Everything else as pomp_in21k-p_vit-b16.py (the n_ctx 4 / 5 epoch one).
_base_ = ['./pomp_in21k-p_vit-b16.py']

max_epochs = 20
model = dict(n_ctx=16)
# the same Dassl schedule, rebuilt for 20 epochs (lists are replaced, not merged)
param_scheduler = [
    dict(type='ConstantLR', factor=1e-5 / 0.002, by_epoch=True, begin=0, end=2),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=0.0, by_epoch=True, begin=1,
         end=max_epochs),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
