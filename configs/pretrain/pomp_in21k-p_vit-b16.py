# POMP on ImageNet-21K-P (winter21, 10,450 classes), the official setting of the released
# n_ctx 4 prompt (66.7 cross-dataset mean; amazon-science/prompt-pretraining docs/MODELS.md,
# configs/trainers/POMP/vit_b16_ep5_randaug2.yaml): ViT-B/16, n_ctx 4, 5 epochs, K = 1000 classes
# per step, 16 shots per class, 4 augmented views per image (Dassl's RandAugment2: 2 ops, each
# applied with probability 0.6 at a random magnitude), SGD lr 0.002,
# batch 32 per GPU, one constant warm-up epoch at 1e-5 then cosine stepped once per epoch
# (Dassl's schedule, below).
#
# The official n_ctx 16 / 20 epoch prompt (vit_b16_ep20_randaug2):
# pomp_in21k-p_vit-b16_ctx16_ep20.py.
# Changing max_epochs needs the param_scheduler rewritten too (T_max and end depend on it), so
# use a config like that one rather than --cfg-options train_cfg.max_epochs=N.
#
# Data: data/imagenet21k_resized/{imagenet21k_train,imagenet21k_val}/<wnid>/*.JPEG
# Weights: open_clip 'openai' ViT-B-16 (or set pretrained to a local file).
custom_imports = dict(imports=['pomp_mm', 'pomp_mm.pretrain'], allow_failed_imports=False)

data_root = 'data/imagenet21k_resized'
num_views = 4
max_epochs = 5
batch_size = 32  # per GPU

model = dict(
    type='PompPretrainer',
    clip_model='ViT-B-16',
    pretrained='openai',
    vocabulary='imagenet21k-p',
    n_ctx=4,
    class_token_position='end',
    num_sampled=1000,
    attention='auto',  # 'varlen' on CUDA (one attention call per layer), 'grouped' on the CPU
    compile=False,  # True: the text blocks through torch.compile (few shapes: sizes bucketed)
    sampling='uniform',
    correction='ln',  # 'log10' reproduces the official code since its commit 871ef33
    seed=42)

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='collate_views'),
    dataset=dict(
        type='ImageNet21K',
        data_root=data_root,
        layout='winter21',
        split='train',
        shots=16,
        seed=1,
        split_file=data_root + '/split_16shots_seed1.json',
        num_views=num_views,
        randaugment='dassl'))  # 'torchvision': torchvision's RandAugment(2, magnitude 9)

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.002, momentum=0.9, weight_decay=5e-4))
# Dassl's (CoOp/POMP) schedule, stepped once per epoch: epoch 0 at WARMUP_CONS_LR 1e-5, then
# epoch e >= 1 at 0.001 * (1 + cos(pi * (e - 1) / max_epochs)) (cosine T_max = MAX_EPOCH, restarted
# after the warm-up). mmengine's ConstantLR restores the base LR at end - 1 (hence end=2: the
# restore lands at the start of epoch 1); cosine is chained on top from epoch 1.
param_scheduler = [
    dict(type='ConstantLR', factor=1e-5 / 0.002, by_epoch=True, begin=0, end=2),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=0.0, by_epoch=True, begin=1,
         end=max_epochs),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)

default_scope = None
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='PromptCheckpointHook', interval=1000)]
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='nccl'))
randomness = dict(seed=42)
log_level = 'INFO'
