# Cross-dataset, test only: the COCO-Stuff-trained POMP model (configs/mmseg/pomp_coco-stuff.py)
# on ADE20K-150. The vocabulary is switched to ADE20K's 150 names; nothing is retrained.
#
#   python tools/test.py configs/mmseg/pomp_coco-stuff_to_ade20k.py work_dirs/pomp_coco-stuff/CKPT
#
# Data: data/ade/ADEChallengeData2016 (images/validation, annotations/validation).
_base_ = ['./pomp_coco-stuff.py']

num_classes = 150
model = dict(
    unseen_classes=None,
    text_encoder=dict(dataset_name='ade20k'),
    decode_head=dict(num_classes=num_classes))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=(640, 640), max_size=2560),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True, type='ADE20KDataset', data_root='data/ade/ADEChallengeData2016',
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        reduce_zero_label=True, pipeline=test_pipeline))
val_dataloader = test_dataloader
# every class is unseen here: plain mIoU
test_evaluator = dict(_delete_=True, type='IoUMetric', iou_metrics=['mIoU'])
val_evaluator = test_evaluator
