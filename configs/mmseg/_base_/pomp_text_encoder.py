# POMP text encoder fragment for MMSegmentation configs.
#
# Inherit it and put `pomp_text_encoder` where mmseg's SAN configs have
# `text_encoder=dict(type='CLIPTextEncoder', ...)`:
#
#   _base_ = ['mmseg::san/san-vit-b16_coco-stuff164k-640x640.py',
#             'path/to/configs/mmseg/_base_/pomp_text_encoder.py']
#   model = dict(text_encoder={{_base_.pomp_text_encoder}})
#
# Weights: `pretrained` is an open_clip tag ('openai') or a local CLIP file; `prompt` is a POMP
# prompt checkpoint (official .pth.tar or pomp_mm's own format).
custom_imports = dict(imports=['pomp_mm'], allow_failed_imports=False)

pomp_text_encoder = dict(
    type='PompTextEncoder',
    clip_model='ViT-B-16',
    pretrained='openai',
    prompt='checkpoints/pomp_vit_b16_in21k.pth.tar',
    dataset_name='coco-stuff',
    cat_bg=True,
    prompt_trainable=False)
