# POMP in the synthetic world (pomp_mm.synthetic): the committed pomp-world-CNN-T CLIP (v3), the
# 23,900 pre-training compositions (the ImageNet-21K analogue; the 100 held-out ones removed),
# K = 1,000 sampled classes per step with the ln local correction, n_ctx 4 randomly initialised
# (as configs/pretrain/pomp_in21k-p_vit-b16.py and CoOp's default). Images: an ImageList CSV
# written by
#   python tools/synthetic/world.py render-pretrain --out work_dirs/world/pretrain --shots 1
# No training augmentation (train=False): the renderer already draws position, scale,
# rotation and clutter at random, and colour augmentations would change the classes' colours.
# make demo trains from the image-feature cache instead: pomp_synthetic_cached.py.
custom_imports = dict(imports=['pomp_mm', 'pomp_mm.pretrain'], allow_failed_imports=False)

data_root = 'work_dirs/world/pretrain'
feature_dir = data_root + '/features'  # pomp_synthetic_cached.py reads the cache here
clip_weights = '{{ fileDirname }}/../../pomp_mm/synthetic/assets/pomp-world-CNN-T.pt'
max_epochs = 3
batch_size = 256

model = dict(
    type='PompPretrainer',
    clip_model='pomp-world-CNN-T',
    pretrained=clip_weights,
    vocabulary='synthetic-pretrain',
    n_ctx=4,
    class_token_position='end',
    num_sampled=1000,
    sampling='uniform',
    correction='ln',
    seed=0)

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='collate_views'),
    dataset=dict(
        type='ImageList',
        source=data_root + '/train.csv',
        vocabulary='synthetic-pretrain',
        image_size=64,
        train=False,
        num_views=1))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=5e-4))
# linear warm-up over the first 50 iterations, then cosine to zero by iteration
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=0.0, by_epoch=True, begin=0,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)

default_scope = None
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='PromptCheckpointHook', interval=1000)]
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
log_level = 'INFO'
