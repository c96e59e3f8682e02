# Test only: the OV-LVIS detector (pomp_mask-rcnn_r50_fpn_lvis-base.py) on Objects365 v2 val
# with the 365 Objects365 class names as its vocabulary (box AP; Objects365 has no masks).
#
#   python tools/test.py configs/mmdet/pomp_mask-rcnn_r50_fpn_lvis-base_to_objects365.py LVIS_CKPT
#
# Data: data/Objects365/Obj365_v2/val/ and annotations/zhiyuan_objv2_val.json.
_base_ = ['./pomp_mask-rcnn_r50_fpn_lvis-base.py']

model = dict(
    roi_head=dict(bbox_head=dict(classifier=dict(test_vocabulary='objects365'))),
    test_cfg=dict(rcnn=dict(score_thr=0.05, max_per_img=100)))

o365_root = 'data/Objects365/Obj365_v2/'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='Objects365V2Dataset',
        data_root=o365_root,
        ann_file='annotations/zhiyuan_objv2_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='CocoMetric',
                     ann_file=o365_root + 'annotations/zhiyuan_objv2_val.json', metric='bbox')
test_evaluator = val_evaluator
train_cfg = None
train_dataloader = None
optim_wrapper = None
param_scheduler = None
