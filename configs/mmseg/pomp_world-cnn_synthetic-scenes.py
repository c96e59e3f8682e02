# Open-vocabulary semantic segmentation in the synthetic world on a convolutional CLIP, sized
# for 2 CPU cores: the world's CNN CLIP (pomp-world-CNN-T) frozen as the image encoder,
# PompDenseCLIPHead on its stride-8 map, class embeddings from a POMP prompt pre-trained in the
# world on the same CLIP; train on the 15 seen scene classes, test on all 20 (5 unseen). Data,
# pipelines, evaluator and hooks are pomp_synthetic-scenes.py's (the SAN version).
#
#   python tools/synthetic/ov.py prepare          # scenes, a POMP prompt on the CNN CLIP
#   python tools/train.py configs/mmseg/pomp_world-cnn_synthetic-scenes.py
#   python tools/test.py configs/mmseg/pomp_world-cnn_synthetic-scenes.py \
#       work_dirs/pomp_world-cnn_synthetic-scenes/iter_800.pth
#
# Design (MaskCLIP / F-VLM + LSeg): SAN needs a ViT; a CNN CLIP's own pooling head applied to
# each map location already gives per-pixel embeddings in CLIP's joint space (exact for its
# average pooling). The head adds a small learned residual (zero at the start, so training
# starts at zero-shot CLIP) and scores pixels by cosine with the text embeddings; the tower and
# the text side stay frozen, so unseen classes are scored in the space CLIP learned. No
# background row (cat_bg=False): scene background is the ignore label.
_base_ = ['./pomp_synthetic-scenes.py']

clip_model = 'pomp-world-CNN-T'
world_clip = 'pomp_mm/synthetic/assets/pomp-world-CNN-T.pt'
prompt = 'work_dirs/synthetic_ov/cnn/pomp/prompt_latest.pth'

# ------------------------------------------------------------------------------- model
# The inherited data preprocessor (OpenAI CLIP's mean / std, which the world CLIPs use), test
# mode and unseen classes stay; the SAN parts are replaced. Scenes are seen at 128 px, as by
# SAN (encoder_resolution 1): the CLIP was trained at 64 px on objects 30-50 px across, scene
# objects are 20-50 px across at 128 px.
model = dict(
    pretrained=None,  # SAN's ViT checkpoint: the CNN CLIP is read from world_clip instead
    image_encoder=dict(_delete_=True, type='OpenClipConvNet', clip_model=clip_model,
                       pretrained=world_clip),
    text_encoder=dict(_delete_=True, type='PompTextEncoder', clip_model=clip_model,
                      pretrained=world_clip, prompt=prompt,
                      vocabulary=list(_base_.classes),
                      cat_bg=False, prompt_trainable=False, cache_feature=True),
    decode_head=dict(
        _delete_=True, type='PompDenseCLIPHead', num_classes=_base_.num_classes,
        clip_model=clip_model, pretrained=world_clip, channels=128, num_convs=2,
        # mean over labelled pixels: most of a scene is background (ignored)
        loss_decode=dict(type='CrossEntropyLoss', loss_name='loss_ce', avg_non_ignore=True,
                         loss_weight=1.0)))

# ------------------------------------------------------------------------------- schedule
# CPU: fp32 AdamW on the head (the residual and the temperature; the CLIP is frozen), no
# weight decay on the temperature
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'logit_scale': dict(decay_mult=0.)}))
