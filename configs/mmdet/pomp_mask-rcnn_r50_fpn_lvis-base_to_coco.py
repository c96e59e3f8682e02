# Test only: the OV-LVIS detector (pomp_mask-rcnn_r50_fpn_lvis-base.py) on COCO val2017 with the
# 80 COCO class names as its vocabulary; no retraining, only the class embeddings change.
#
#   python tools/test.py configs/mmdet/pomp_mask-rcnn_r50_fpn_lvis-base_to_coco.py LVIS_CKPT
#
# Data: data/coco/val2017/ and data/coco/annotations/instances_val2017.json.
_base_ = ['./pomp_mask-rcnn_r50_fpn_lvis-base.py']

model = dict(
    roi_head=dict(bbox_head=dict(classifier=dict(test_vocabulary='coco'))),
    test_cfg=dict(rcnn=dict(score_thr=0.05, max_per_img=100)))

coco_root = 'data/coco/'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root=coco_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='CocoMetric',
                     ann_file=coco_root + 'annotations/instances_val2017.json',
                     metric=['bbox', 'segm'])
test_evaluator = val_evaluator
train_cfg = None
train_dataloader = None
optim_wrapper = None
param_scheduler = None
