# Open-vocabulary semantic segmentation in the synthetic world, sized for 2 CPU cores: SAN with
# the world's CLIP on both sides and a POMP prompt pre-trained in the world; train on the 15
# seen scene classes, test on all 20 (5 unseen). Same structure as pomp_voc.py, which it
# inherits (OpenVocabEncoderDecoder, PompSideAdapterCLIPHead, IgnoreUnseenClasses,
# OpenVocabIoUMetric, VocabularyCheckHook).
#
#   python tools/synthetic/ov.py prepare          # scenes, SAN-format CLIP, a POMP prompt
#   python tools/train.py configs/mmseg/pomp_synthetic-scenes.py
#   python tools/test.py configs/mmseg/pomp_synthetic-scenes.py \
#       work_dirs/pomp_synthetic-scenes/iter_800.pth
#
# Weights: the world CLIP's first 3 ViT blocks in the image encoder, the 4th in the head's
# recognition layers (`pretrained`: its SAN-format copy, made by pomp_mm.mmseg.convert); its
# text tower with the prompt in PompTextEncoder. Both see the scenes at 128 px
# (encoder_resolution 1): the CLIP was trained at 64 px on objects 30-50 px across, and scene
# objects are 20-50 px across at 128 px (its position embedding is interpolated, 8x8 -> 16x16).
_base_ = ['./pomp_voc.py']

data_root = 'work_dirs/synthetic_ov/scenes'
world_clip = 'pomp_mm/synthetic/assets/pomp-world-ViT-T-8.pt'
pretrained = 'work_dirs/synthetic_ov/pomp-world-ViT-T-8_san.pth'
prompt = 'work_dirs/synthetic_ov/pomp/prompt_latest.pth'

# pomp_mm.synthetic.protocol.scene_classes() and scene_unseen_ids() (a test checks they agree)
classes = ('purple circle', 'tan square', 'gray triangle', 'lavender star', 'orange heart',
           'white cross', 'brown diamond', 'black hexagon', 'cyan pentagon', 'red crescent',
           'blue arrow', 'navy oval', 'lime rectangle', 'maroon octagon', 'magenta trapezoid',
           'yellow semicircle', 'pink kite', 'olive parallelogram', 'teal chevron', 'green bolt')
unseen_classes = ['lavender star', 'lime rectangle', 'maroon octagon', 'pink kite',
                  'olive parallelogram']
num_classes = len(classes)
metainfo = dict(classes=classes)
crop_size = (128, 128)
num_queries = 20

# ------------------------------------------------------------------------------- model
data_preprocessor = dict(size_divisor=crop_size[0], test_cfg=dict(size_divisor=32))
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=pretrained,
    unseen_classes=unseen_classes,
    encoder_resolution=1.0,
    image_encoder=dict(img_size=(64, 64), patch_size=8, embed_dims=128, num_layers=3,
                       num_heads=4, out_indices=(0, 1, 2), act_cfg=dict(type='GELU')),
    text_encoder=dict(_delete_=True, type='PompTextEncoder', clip_model='pomp-world-ViT-T-8',
                      pretrained=world_clip, prompt=prompt, vocabulary=list(classes),
                      cat_bg=True, prompt_trainable=False, cache_feature=True),
    decode_head=dict(
        num_classes=num_classes,
        deep_supervision_idxs=[],
        # fusion_index: one per CLIP feature map (the patch embedding + out_indices)
        san_cfg=dict(clip_channels=128, embed_dims=96, patch_size=16, num_queries=num_queries,
                     fusion_index=[0, 1, 2, 3],
                     cfg_encoder=dict(num_encode_layer=4, num_heads=4, mlp_ratio=4),
                     cfg_decoder=dict(num_heads=4, embed_channels=64, mlp_channels=64)),
        maskgen_cfg=dict(sos_token_num=num_queries, num_layers=1, embed_dims=128,
                         num_heads=4, mlp_ratio=4, out_dims=64, act_cfg=dict(type='GELU')),
        train_cfg=dict(num_points=1024),
        loss_decode=[dict(type='CrossEntropyLoss', loss_name='loss_cls_ce', loss_weight=2.0,
                          class_weight=[1.0] * num_classes + [0.1]),
                     dict(type='CrossEntropyLoss', use_sigmoid=True, loss_name='loss_mask_ce',
                          loss_weight=5.0),
                     dict(type='DiceLoss', ignore_index=None, naive_dice=True, eps=1,
                          loss_name='loss_mask_dice', loss_weight=5.0)]))

# ------------------------------------------------------------------------------- data
# pomp_mm.synthetic.scenes layout; label maps 0 = background -> 255 (ignored), k + 1 -> k
_scenes = dict(_delete_=True, type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
               img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='IgnoreUnseenClasses', classes=classes, unseen_classes=unseen_classes),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(_scenes, ann_file='splits/train.txt', pipeline=train_pipeline,
                 data_prefix=dict(img_path='images/train', seg_map_path='labels/train')))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(_scenes, ann_file='splits/val.txt', pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/val', seg_map_path='labels/val')))
test_dataloader = val_dataloader
# restated: pomp_voc.py's evaluator holds VOC's unseen classes
val_evaluator = dict(type='OpenVocabIoUMetric', iou_metrics=['mIoU'],
                     unseen_classes=unseen_classes)
test_evaluator = val_evaluator

# ------------------------------------------------------------------------------- schedule
# CPU: plain fp32 AdamW (SAN's AmpOptimWrapper needs CUDA), SAN's lr and clipping
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'img_encoder': dict(lr_mult=0.1, decay_mult=1.0),
                                    'pos_embed': dict(decay_mult=0.),
                                    'cls_token': dict(decay_mult=0.),
                                    'norm': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=0.01, norm_type=2))
max_iters = 800
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_iters, by_epoch=False)
]
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1, save_best=None))
env_cfg = dict(cudnn_benchmark=False)
