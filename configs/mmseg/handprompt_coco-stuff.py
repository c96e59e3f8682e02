# Baseline for configs/mmseg/pomp_coco-stuff.py: the same model and data, but class embeddings from
# hand templates (mmseg's ViLD templates, as SAN uses) instead of the POMP prompt.
_base_ = ['./pomp_coco-stuff.py']

model = dict(text_encoder=dict(prompt=None, templates='vild'))
