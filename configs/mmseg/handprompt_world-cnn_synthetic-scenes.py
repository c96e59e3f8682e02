# Baseline for configs/mmseg/pomp_world-cnn_synthetic-scenes.py: the same model and data, but
# class embeddings from hand templates (mmseg's ViLD templates, as SAN and handprompt_voc.py
# use) instead of the POMP prompt.
_base_ = ['./pomp_world-cnn_synthetic-scenes.py']

model = dict(text_encoder=dict(prompt=None, templates='vild'))
