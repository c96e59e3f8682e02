# Cross-dataset, test only: the COCO-Stuff-trained POMP model (configs/mmseg/pomp_coco-stuff.py)
# on Pascal Context-59. The vocabulary is switched to its 59 names; nothing is retrained.
#
#   python tools/test.py configs/mmseg/pomp_coco-stuff_to_pascal-context.py CKPT
#
# Data: data/VOCdevkit/VOC2010 with SegmentationClassContext and
# ImageSets/SegmentationContext/val.txt (mmseg's pascal_context.py converter).
_base_ = ['./pomp_coco-stuff_to_ade20k.py']

num_classes = 59
model = dict(
    text_encoder=dict(dataset_name='pascal-context'),
    decode_head=dict(num_classes=num_classes))

test_dataloader = dict(
    dataset=dict(
        _delete_=True, type='PascalContextDataset59', data_root='data/VOCdevkit/VOC2010',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
        ann_file='ImageSets/SegmentationContext/val.txt', reduce_zero_label=True,
        pipeline={{_base_.test_pipeline}}))
val_dataloader = test_dataloader
