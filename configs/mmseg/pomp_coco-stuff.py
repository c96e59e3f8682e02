# Open-vocabulary semantic segmentation on COCO-Stuff 164k with SAN ViT-B/16 and a POMP prompt:
# train on 156 seen classes, test on all 171 (15 unseen, the ZSSeg split).
#
#   python tools/train.py configs/mmseg/pomp_coco-stuff.py
#   python tools/test.py configs/mmseg/pomp_coco-stuff.py work_dirs/pomp_coco-stuff/best_hIoU_*.pth
#
# Data: data/coco_stuff164k as made by mmseg's tools/dataset_converters/coco_stuff164k.py.
# Weights: SAN's mmseg-format CLIP checkpoint for the image side (inherited `pretrained`),
# open_clip's ViT-B-16 'openai' for the text side, and the POMP prompt below.
_base_ = ['mmseg::san/san-vit-b16_coco-stuff164k-640x640.py', './_base_/pomp_text_encoder.py']

unseen_classes = ['cow', 'giraffe', 'suitcase', 'frisbee', 'skateboard', 'carrot', 'scissors',
                  'cardboard', 'clouds', 'grass', 'playingfield', 'river', 'road', 'tree',
                  'wall-concrete']
num_classes = 171

model = dict(
    type='OpenVocabEncoderDecoder',
    unseen_classes=unseen_classes,
    # the fragment's PompTextEncoder (CLIP ViT-B-16 'openai', the official n_ctx 16 prompt)
    # replaces SAN's CLIPTextEncoder; prompt_trainable=True fine-tunes the prompt on the
    # seen classes (its lr: paramwise_cfg below)
    text_encoder=dict(_base_.pomp_san_text_encoder, cache_feature=True),
    decode_head=dict(
        type='PompSideAdapterCLIPHead',
        num_classes=num_classes,
        no_object_weight=0.1))

crop_size = (640, 640)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='IgnoreUnseenClasses', classes='coco-stuff', unseen_classes=unseen_classes),
    dict(type='RandomChoiceResize', scales=[int(640 * x * 0.1) for x in range(5, 16)],
         resize_type='ResizeShortestEdge', max_size=2560),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'img_encoder': dict(lr_mult=0.1, decay_mult=1.0),
    'pos_embed': dict(decay_mult=0.),
    'cls_token': dict(decay_mult=0.),
    'norm': dict(decay_mult=0.),
    # the prompt's own learning rate when prompt_trainable=True (POMP fine-tunes it gently)
    'prompt_learner.ctx': dict(lr_mult=0.1, decay_mult=0.),
}))

val_evaluator = dict(type='OpenVocabIoUMetric', iou_metrics=['mIoU'],
                     unseen_classes=unseen_classes)
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(save_best='hIoU', rule='greater'))
custom_hooks = [dict(type='VocabularyCheckHook')]
