# Baseline for pomp_faster-rcnn_world-cnn_synthetic-scenes.py: the same detector and data, but
# class embeddings from hand templates (mmseg's ViLD templates) instead of the POMP prompt.
_base_ = ['./pomp_faster-rcnn_world-cnn_synthetic-scenes.py']

model = dict(roi_head=dict(bbox_head=dict(classifier=dict(
    text_encoder=dict(prompt=None, templates='vild')))))
