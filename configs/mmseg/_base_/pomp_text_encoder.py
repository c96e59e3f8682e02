# POMP text encoder fragment for MMSegmentation configs.
#
# Inherit it beside one of mmseg's SAN configs and put `pomp_san_text_encoder` where they
# have `text_encoder=dict(type='CLIPTextEncoder', ...)`:
#
#   _base_ = ['mmseg::san/san-vit-b16_coco-stuff164k-640x640.py',
#             'path/to/configs/mmseg/_base_/pomp_text_encoder.py']
#   model = dict(type='OpenVocabEncoderDecoder', text_encoder={{_base_.pomp_san_text_encoder}})
#
# `pomp_san_text_encoder` is `pomp_text_encoder` with `_delete_=True`: it replaces the inherited
# CLIPTextEncoder dict instead of merging into it (CLIPTextEncoder's embed_dims, num_layers,
# norm_cfg, ... are no PompTextEncoder arguments). Use `pomp_text_encoder` where no text encoder
# is inherited (`_delete_` would reach PompTextEncoder). mmseg's MultimodalEncoderDecoder works
# too; `OpenVocabEncoderDecoder` adds seen/unseen training and the vocabulary checks.
#
# Weights: `pretrained` is an open_clip tag ('openai') or a local CLIP file; `prompt` is a POMP
# prompt checkpoint (official .pth.tar or pomp_mm's own format).
custom_imports = dict(imports=['pomp_mm', 'pomp_mm.mmseg'], allow_failed_imports=False)

pomp_text_encoder = dict(
    type='PompTextEncoder',
    clip_model='ViT-B-16',
    pretrained='openai',
    # the official n_ctx 16 POMP prompt, under its own name (docs/model_zoo.md)
    prompt=('checkpoints/vit_b16_ep20_randaug2_unc1000_16shots_nctx16_'
            'cscFalse_ctpend_seed42.pth.tar'),
    dataset_name='coco-stuff',
    cat_bg=True,
    prompt_trainable=False)
pomp_san_text_encoder = dict(pomp_text_encoder, _delete_=True)
