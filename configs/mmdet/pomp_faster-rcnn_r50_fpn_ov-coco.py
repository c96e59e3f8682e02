# Open-vocabulary detection on COCO (OVR-CNN split): Faster R-CNN R50-FPN trained on the 48 base
# classes, tested on all 65 (48 base + 17 novel); the headline is novel AP50 (OVCocoMetric).
#
#   python tools/train.py configs/mmdet/pomp_faster-rcnn_r50_fpn_ov-coco.py
#   python tools/test.py configs/mmdet/pomp_faster-rcnn_r50_fpn_ov-coco.py \
#       work_dirs/pomp_faster-rcnn_r50_fpn_ov-coco/epoch_12.pth
#
# Weights: ImageNet ResNet-50 (torchvision, as mmdet's base config), CLIP ViT-B/16 'openai' and
# a POMP prompt checkpoint for the class embeddings (see _base_/pomp_text_encoder.py).
# Data: data/coco/{train2017,val2017}/ and annotations/instances_train2017_seen_2.json,
# instances_val2017_all_2.json (OVR-CNN's 48/17 files); the full instances_train2017.json works
# for training too: OpenVocabCocoDataset drops the annotations of non-base classes.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    './_base_/pomp_text_encoder.py',
]

base_classes = (
    'person', 'bicycle', 'car', 'motorcycle', 'train', 'truck', 'boat', 'bench', 'bird',
    'horse', 'sheep', 'bear', 'zebra', 'giraffe', 'backpack', 'handbag', 'suitcase', 'frisbee',
    'skis', 'kite', 'surfboard', 'bottle', 'fork', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'pizza', 'donut', 'chair', 'bed', 'toilet', 'tv',
    'laptop', 'mouse', 'remote', 'microwave', 'oven', 'toaster', 'refrigerator', 'book', 'clock',
    'vase', 'toothbrush')
novel_classes = (
    'airplane', 'bus', 'cat', 'dog', 'cow', 'elephant', 'umbrella', 'tie', 'snowboard',
    'skateboard', 'cup', 'knife', 'cake', 'couch', 'keyboard', 'sink', 'scissors')
# the 65 classes in COCO category-id order
all_classes = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra',
    'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis',
    'snowboard', 'kite', 'skateboard', 'surfboard', 'bottle', 'cup', 'fork', 'knife', 'spoon',
    'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot', 'pizza', 'donut',
    'cake', 'chair', 'couch', 'bed', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard',
    'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors',
    'toothbrush')

model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='PompBBoxHead',
            num_classes=len(base_classes),
            reg_class_agnostic=True,
            classifier=dict(
                text_encoder={{_base_.pomp_text_encoder}},
                vocabulary=list(base_classes),
                test_vocabulary=list(all_classes),
                temperature=50.0))))

# ------------------------------------------------------------------------------- data
dataset_type = 'OpenVocabCocoDataset'
data_root = 'data/coco/'
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=dict(classes=base_classes),
        ann_file='annotations/instances_train2017_seen_2.json',
        data_prefix=dict(img='train2017/')))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=dict(classes=all_classes, base_classes=base_classes,
                      novel_classes=novel_classes),
        ann_file='annotations/instances_val2017_all_2.json',
        data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader
val_evaluator = dict(type='OVCocoMetric', ann_file=data_root +
                     'annotations/instances_val2017_all_2.json', metric='bbox')
test_evaluator = val_evaluator
# dataset classes must match the head's train / test vocabularies, in order
custom_hooks = [dict(type='DetVocabularyCheckHook')]
default_hooks = dict(checkpoint=dict(save_best='coco/novel_ap50', rule='greater'))
