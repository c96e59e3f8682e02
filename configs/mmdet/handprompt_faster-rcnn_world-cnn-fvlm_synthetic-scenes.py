# F-VLM's score fusion (Kuo et al., ICLR 2023; its published weights) at test time for
# handprompt_faster-rcnn_world-cnn_synthetic-scenes.py: each class probability is the geometric
# mean of the box head's and the frozen CLIP region embedding's zero-shot one, weighted 0.35
# (base classes) or 0.65 (novel) towards CLIP. It reads the unfused config's checkpoints.
#
#   python tools/test.py configs/mmdet/handprompt_faster-rcnn_world-cnn-fvlm_synthetic-scenes.py \
#       work_dirs/handprompt_faster-rcnn_world-cnn_synthetic-scenes/epoch_3.pth
_base_ = ['./handprompt_faster-rcnn_world-cnn_synthetic-scenes.py']

model = dict(roi_head=dict(bbox_head=dict(
    vlm_fusion=dict(base=0.35, novel=0.65, temperature=0.01))))
