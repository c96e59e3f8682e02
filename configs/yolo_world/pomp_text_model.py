# POMP language backbone for YOLO-World (AILab-CVC/YOLO-World, on mmyolo): class texts are
# embedded through a POMP prompt on the CLIP text tower YOLO-World was trained with.
#
# Use: a config of your own whose _base_ is a YOLO-World config, with these lines added:
#
#   _base_ = ['<YOLO-World>/configs/pretrain/yolo_world_v2_s_vlpan_bn_2e-3_100e_4x8gpus_'
#             'obj365v1_goldg_train_lvis_minival.py']
#   <the lines below>
#
# PompLanguageBackbone takes HuggingCLIPLanguageBackbone's arguments: the base's model_name
# (openai/clip-vit-base-patch32, or a folder saved from it; set HF_HUB_OFFLINE=1 with a cached
# copy) stays the CLIP and frozen_modules is accepted. Only the prompt is new: a ViT-B/32 one,
# the width of YOLO-World's text tower (docs/model_zoo.md). mmyolo 0.6.0 needs mmcv < 2.1.0:
# run it in its own environment (docs/detection.md, "YOLO-World").
custom_imports = dict(imports=['yolo_world', 'pomp_mm.yolo_world'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        text_model=dict(
            type='PompLanguageBackbone',
            # the official n_ctx 16 ViT-B/32 POMP prompt, under its own name
            prompt=('checkpoints/vit_b32_ep20_randaug2_unc1000_16shots_nctx16_'
                    'cscFalse_ctpend_seed42.pth.tar'))))
