# POMP in the synthetic world on the ViT world CLIP (pomp-world-ViT-T-8, world v2): the prompt
# tools/synthetic/ov.py trains for open-vocabulary segmentation and detection in the world,
# whose SAN and RoI heads need a ViT. Everything else as pomp_synthetic.py.
_base_ = ['./pomp_synthetic.py']

clip_weights = '{{ fileDirname }}/../../pomp_mm/synthetic/assets/pomp-world-ViT-T-8.pt'
model = dict(clip_model='pomp-world-ViT-T-8', pretrained=clip_weights)
