# Zero-shot detection in the synthetic world on world v3's convolutional CLIP
# (pomp-world-CNN-T): the world-ViT config's detector, data and schedule, with the F-VLM region
# embedding of a CNN. The frozen tower's last map (stride 8, 256 channels) feeds the RPN; each
# RoI is RoIAligned on that map (4x4) and pooled by the tower's own head (average pooling and
# projection), which is how the CLIP pools a whole image: ground-truth scene boxes score 78 %
# zero-shot (20-way; `python tools/synthetic/ov.py probe --clip cnn`).
#
#   python tools/synthetic/ov.py prepare --clip cnn   # scenes, a POMP prompt on this CLIP
#   python tools/train.py configs/mmdet/pomp_faster-rcnn_world-cnn_synthetic-scenes.py
#   python tools/test.py configs/mmdet/pomp_faster-rcnn_world-cnn_synthetic-scenes.py \
#       work_dirs/pomp_faster-rcnn_world-cnn_synthetic-scenes/epoch_3.pth
_base_ = ['./pomp_faster-rcnn_world-vit_synthetic-scenes.py']

world_clip = 'pomp_mm/synthetic/assets/pomp-world-CNN-T.pt'
prompt = 'work_dirs/synthetic_ov/cnn/pomp/prompt_latest.pth'

model = dict(
    backbone=dict(_delete_=True, type='OpenClipConvNet', clip_model='pomp-world-CNN-T',
                  pretrained=world_clip),
    roi_head=dict(
        bbox_roi_extractor=dict(_delete_=True, type='ClipPoolRoIExtractor',
                                clip_model='pomp-world-CNN-T', pretrained=world_clip),
        bbox_head=dict(classifier=dict(text_encoder=dict(
            clip_model='pomp-world-CNN-T', pretrained=world_clip, prompt=prompt)))))
