# Zero-shot detection in the synthetic world, sized for 2 CPU cores: the OV-COCO config's
# Faster R-CNN with PompBBoxHead, on a frozen world-CLIP backbone; trained on the 15 base scene
# classes, tested on all 20 (5 novel) with OVCocoMetric (base / novel AP50).
#
#   python tools/synthetic/ov.py prepare          # scenes, a POMP prompt
#   python tools/train.py configs/mmdet/pomp_faster-rcnn_world-vit_synthetic-scenes.py
#   python tools/test.py configs/mmdet/pomp_faster-rcnn_world-vit_synthetic-scenes.py \
#       work_dirs/pomp_faster-rcnn_world-vit_synthetic-scenes/epoch_3.pth
#
# Why region embeddings from the frozen CLIP (the F-VLM idea, for a ViT): the head scores a
# region by the cosine of its embedding with each class's text embedding, so classes without
# boxes in training can only be found if the region embedding already lives in CLIP's joint
# space. A class-token ViT does not pool boxes from its patch tokens: averaged last-block tokens
# of ground-truth boxes score at chance (5 %, 20-way, no training), while ClipRoIExtractor,
# which resamples each box from the patch embedding map onto the CLIP's 8x8 token grid and runs
# the frozen tower on it, scores 71 % (`python tools/synthetic/ov.py probe`, train scenes).
# The backbone returns one stride-8 map (128 px images: 16x16), the patch embeddings and the
# last block's tokens stacked; the RPN (two 3x3 convs) reads both, the extractor the first.
_base_ = ['./pomp_faster-rcnn_r50_fpn_ov-coco.py']

data_root = 'work_dirs/synthetic_ov/scenes/'
world_clip = 'pomp_mm/synthetic/assets/pomp-world-ViT-T-8.pt'
prompt = 'work_dirs/synthetic_ov/pomp/prompt_latest.pth'

# pomp_mm.synthetic.protocol.scene_classes() in category-id order, and its unseen ids
all_classes = ('purple circle', 'tan square', 'gray triangle', 'lavender star', 'orange heart',
               'white cross', 'brown diamond', 'black hexagon', 'cyan pentagon', 'red crescent',
               'blue arrow', 'navy oval', 'lime rectangle', 'maroon octagon', 'magenta trapezoid',
               'yellow semicircle', 'pink kite', 'olive parallelogram', 'teal chevron',
               'green bolt')
novel_classes = ('lavender star', 'lime rectangle', 'maroon octagon', 'pink kite',
                 'olive parallelogram')
base_classes = ('purple circle', 'tan square', 'gray triangle', 'orange heart', 'white cross',
                'brown diamond', 'black hexagon', 'cyan pentagon', 'red crescent', 'blue arrow',
                'navy oval', 'magenta trapezoid', 'yellow semicircle', 'teal chevron',
                'green bolt')

# ------------------------------------------------------------------------------- model
model = dict(
    # CLIP's normalisation
    data_preprocessor=dict(mean=[122.7709, 116.7460, 104.0937], std=[68.5005, 66.6322, 70.3232],
                           bgr_to_rgb=True, pad_size_divisor=8),
    backbone=dict(_delete_=True, type='OpenClipViT', clip_model='pomp-world-ViT-T-8',
                  pretrained=world_clip, out_indices=(3,), patch_embed_out=True,
                  concat_outputs=True),
    neck=None,
    rpn_head=dict(
        in_channels=256, feat_channels=128, num_convs=2,
        anchor_generator=dict(type='AnchorGenerator', scales=[2.5, 4, 6],
                              ratios=[0.5, 1.0, 2.0], strides=[8])),
    roi_head=dict(
        bbox_roi_extractor=dict(_delete_=True, type='ClipRoIExtractor',
                                clip_model='pomp-world-ViT-T-8', pretrained=world_clip),
        bbox_head=dict(
            in_channels=64, roi_feat_size=1, fc_out_channels=256, num_classes=len(base_classes),
            classifier=dict(
                text_encoder=dict(_delete_=True, type='PompTextEncoder',
                                  clip_model='pomp-world-ViT-T-8', pretrained=world_clip,
                                  prompt=prompt),
                vocabulary=list(base_classes),
                test_vocabulary=list(all_classes)))),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300),
                   rpn=dict(sampler=dict(num=128)), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100),
                  rcnn=dict(score_thr=0.01, max_per_img=20)))

# ------------------------------------------------------------------------------- data
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),  # scenes are 128 px: records scale 1
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=base_classes),
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='images/train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root,
                 metainfo=dict(classes=all_classes, base_classes=base_classes,
                               novel_classes=novel_classes),
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='images/val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# ------------------------------------------------------------------------------- schedule
max_epochs = 3
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[2],
         gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=0.01))  # batch 8 (mmdet's 0.02 is for 16)
default_hooks = dict(checkpoint=dict(interval=max_epochs, max_keep_ckpts=1, save_best=None),
                     logger=dict(interval=50))
