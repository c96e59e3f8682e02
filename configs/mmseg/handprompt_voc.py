# Baseline for configs/mmseg/pomp_voc.py: the same model and data, but class embeddings from
# hand templates (mmseg's ViLD templates, as SAN uses) instead of the POMP prompt.
_base_ = ['./pomp_voc.py']

model = dict(text_encoder=dict(prompt=None, templates='vild'))
