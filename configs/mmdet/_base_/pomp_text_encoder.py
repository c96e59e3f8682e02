# POMP text encoder fragment for MMDetection configs: it embeds the class names of a
# ZeroShotClassifier / PompBBoxHead. Inherit it and reference it from the head:
#
#   _base_ = ['mmdet::_base_/models/faster-rcnn_r50_fpn.py', ..., 'pomp_text_encoder.py']
#   model = dict(roi_head=dict(bbox_head=dict(
#       type='PompBBoxHead', num_classes=..., reg_class_agnostic=True,
#       classifier=dict(text_encoder={{_base_.pomp_text_encoder}}, vocabulary=[...]))))
#
# or export the embeddings once with tools/export_embeddings.py and give the classifier
# `embeddings='file.npy'` instead (no text tower at run time).
#
# Weights: `pretrained` is an open_clip tag ('openai') or a local CLIP file; `prompt` is a POMP
# prompt checkpoint (official .pth.tar or pomp_mm's own format). The head fills in the class
# names; the embeddings are computed once per vocabulary and cached in `cache_dir`.
custom_imports = dict(imports=['pomp_mm', 'pomp_mm.mmdet'], allow_failed_imports=False)

pomp_text_encoder = dict(
    type='PompTextEncoder',
    clip_model='ViT-B-16',
    pretrained='openai',
    # the official n_ctx 16 POMP prompt, under its own name (docs/model_zoo.md)
    prompt=('checkpoints/vit_b16_ep20_randaug2_unc1000_16shots_nctx16_'
            'cscFalse_ctpend_seed42.pth.tar'),
    cache_dir='~/.cache/pomp_mm')
