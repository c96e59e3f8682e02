# Open-vocabulary instance segmentation on LVIS v1 (OV-LVIS): Mask R-CNN R50-FPN trained on the
# frequent + common classes (866; rare annotations removed), tested on all 1,203 with mmdet's
# LVISMetric; the headline is APr (mask AP on the 337 rare classes).
#
#   python tools/train.py configs/mmdet/pomp_mask-rcnn_r50_fpn_lvis-base.py
#   python tools/test.py configs/mmdet/pomp_mask-rcnn_r50_fpn_lvis-base.py CKPT
#
# Loss: Detic's sigmoid loss with 50 sampled classes per batch, weighted by image_count ** 0.5
# read from the training file, rare classes never sampled (so they are not learnt as
# negatives). Weights: as the OV-COCO config. Data: data/lvis_v1/annotations/lvis_v1_{train,val}
# .json and COCO 2017 images under data/lvis_v1/ (train2017/, val2017/), as mmdet's LVIS configs.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/lvis_v1_instance.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
    './_base_/pomp_text_encoder.py',
]

data_root = 'data/lvis_v1/'
train_ann = 'annotations/lvis_v1_train.json'
num_classes = 1203

model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='PompBBoxHead',
            num_classes=num_classes,
            reg_class_agnostic=True,
            classifier=dict(
                text_encoder={{_base_.pomp_text_encoder}},
                vocabulary='lvis',
                temperature=50.0,
                bias_init=-4.6),  # sigmoid prior of 1%
            loss_cls=dict(
                _delete_=True,
                type='FederatedSigmoidLoss',
                num_sample_cats=50,
                class_frequencies=data_root + train_ann,
                exclude_frequencies=['r'],
                power=0.5)),
        mask_head=dict(num_classes=num_classes, class_agnostic=True)),
    test_cfg=dict(
        rcnn=dict(score_thr=0.0001, max_per_img=300)))  # LVIS evaluates 300 detections/image

train_dataloader = dict(
    dataset=dict(
        dataset=dict(
            type='OpenVocabLVISV1Dataset',
            exclude_frequencies=['r'],
            data_root=data_root,
            ann_file=train_ann)))
# dataset classes must match the head's train / test vocabularies, in order
custom_hooks = [dict(type='DetVocabularyCheckHook')]
default_hooks = dict(checkpoint=dict(save_best='lvis/segm_APr', rule='greater'))
