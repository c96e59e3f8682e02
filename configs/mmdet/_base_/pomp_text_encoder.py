# POMP text encoder fragment for MMDetection configs: class embeddings for an open-vocabulary
# classifier. Inherit it and reference `pomp_text_encoder` from your head's config, or export
# the embeddings once with tools/export_embeddings.py and point the head at the .npy file.
#
# Weights: `pretrained` is an open_clip tag ('openai') or a local CLIP file; `prompt` is a POMP
# prompt checkpoint (official .pth.tar or pomp_mm's own format).
custom_imports = dict(imports=['pomp_mm'], allow_failed_imports=False)

pomp_text_encoder = dict(
    type='PompTextEncoder',
    clip_model='ViT-B-16',
    pretrained='openai',
    prompt='checkpoints/pomp_vit_b16_in21k.pth.tar',
    dataset_name='lvis',
    cat_bg=False,
    cache_dir='~/.cache/pomp_mm')
