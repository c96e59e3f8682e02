# Open-vocabulary semantic segmentation on PASCAL VOC 2012 (aug) with SAN ViT-B/16 and a POMP
# prompt: train on the 15 seen classes, test on all 20 (ZSSeg split, background ignored).
#
#   python tools/train.py configs/mmseg/pomp_voc.py
#   python tools/test.py configs/mmseg/pomp_voc.py work_dirs/pomp_voc/best_hIoU_iter_*.pth
#
# Weights: the image side (CLIP ViT-B/16 layers 0-8 in the image encoder, 9-11 in the head's
# recognition branch) comes from SAN's mmseg-format CLIP checkpoint (`pretrained`, inherited);
# the text side is open_clip's ViT-B-16 'openai' CLIP (same model, so the embedding spaces
# agree) with the POMP prompt. Data: data/VOCdevkit/VOC2012 with SegmentationClassAug and
# ImageSets/Segmentation/aug.txt as made by mmseg's tools/dataset_converters/voc_aug.py.
_base_ = ['mmseg::san/san-vit-b16_coco-stuff164k-640x640.py', './_base_/pomp_text_encoder.py']

# VOC's 20 object classes in label order ('background' left out: it becomes 255, ignored,
# and SAN's text encoder learns its own background row, cat_bg=True).
classes = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
           'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep',
           'sofa', 'train', 'tvmonitor')
unseen_classes = ['pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor']
num_classes = len(classes)
metainfo = dict(classes=classes)

crop_size = (512, 512)  # VOC images are at most 500 px: SAN's 640 crops would be mostly pad

# ------------------------------------------------------------------------------- model
data_preprocessor = dict(size_divisor=crop_size[0], test_cfg=dict(size_divisor=32))
model = dict(
    type='OpenVocabEncoderDecoder',
    data_preprocessor=data_preprocessor,
    unseen_classes=unseen_classes,
    # the fragment's PompTextEncoder (CLIP ViT-B-16 'openai', the official n_ctx 16 prompt)
    # replaces SAN's CLIPTextEncoder
    text_encoder=dict(_base_.pomp_san_text_encoder, dataset_name='voc', cache_feature=True),
    decode_head=dict(
        type='PompSideAdapterCLIPHead',
        num_classes=num_classes,
        no_object_weight=0.1))

# ------------------------------------------------------------------------------- data
dataset_type = 'PascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='IgnoreUnseenClasses', classes=classes, unseen_classes=unseen_classes),
    dict(type='RandomChoiceResize', scales=[int(crop_size[0] * x * 0.1) for x in range(5, 21)],
         resize_type='ResizeShortestEdge', max_size=2048),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=crop_size, max_size=2048),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# 4 GPUs x 4 images = 16 images per step (ZSSeg's VOC batch). VOC train + SBD aug, as
# mmseg's pascal_voc12_aug.py.
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 data_prefix=dict(img_path='JPEGImages', seg_map_path=seg_map_path),
                 ann_file=f'ImageSets/Segmentation/{split}.txt', pipeline=train_pipeline)
            for split, seg_map_path in (('train', 'SegmentationClass'),
                                        ('aug', 'SegmentationClassAug'))
        ]))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True, type=dataset_type, data_root=data_root, metainfo=metainfo,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt', pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='OpenVocabIoUMetric', iou_metrics=['mIoU'],
                     unseen_classes=unseen_classes)
test_evaluator = val_evaluator

# ------------------------------------------------------------------------------- schedule
max_iters = 20000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=2000,
                 val_begin=1)
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_iters, by_epoch=False)
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000, max_keep_ckpts=2,
                    save_best='hIoU', rule='greater'))
# Label ids index the text encoder's vocabulary: fail early if a dataset lists other classes.
custom_hooks = [dict(type='VocabularyCheckHook')]
