"""Test and benchmark fixtures for the mmseg adapter (no registration side effects)."""

#: Overrides that shrink the SAN ViT-B/16 configs to a tiny model with random weights (64-wide
#: 3-layer ViT, 10 queries, 64x64 inputs) for tests and benchmarks; pair it with
#: pomp_mm.clip.TINY_CLIP for the text side.
TINY_SAN = dict(
    pretrained=None,
    data_preprocessor=dict(size_divisor=64),
    image_encoder=dict(img_size=(32, 32), embed_dims=64, num_layers=3, num_heads=2,
                       out_indices=(1, 2)),
    decode_head=dict(
        deep_supervision_idxs=[],
        # fusion_index: one entry per CLIP feature map (out_indices + the origin)
        san_cfg=dict(clip_channels=64, embed_dims=32, num_queries=10, fusion_index=[0, 1, 2],
                     cfg_encoder=dict(num_encode_layer=2, num_heads=2, mlp_ratio=2),
                     cfg_decoder=dict(num_heads=2, embed_channels=32, mlp_channels=32)),
        maskgen_cfg=dict(sos_token_num=10, num_layers=1, embed_dims=64, num_heads=2,
                         mlp_ratio=2, out_dims=32),
        train_cfg=dict(num_points=256)))

__all__ = ['TINY_SAN']
