"""open_clip image-tower weights in the layout SAN reads (mmseg's ``clip2mmseg`` format).

SAN splits CLIP's ViT in two: the first ``split`` blocks run in the segmentor's
``image_encoder`` (mmseg ``VisionTransformer``), the rest in the head's ``rec_with_attnbias``
(mask recognition with attention biases). :func:`clip_to_san_state_dict` maps an open_clip
``CLIP`` state dict onto those keys, so any open_clip ViT (the synthetic world's included) can
be SAN's ``pretrained`` checkpoint.
"""
from __future__ import annotations

from typing import Dict

import torch

__all__ = ['clip_to_san_state_dict']

_ENCODER_BLOCK = {'ln_1': 'ln1', 'ln_2': 'ln2', 'attn': 'attn.attn',
                  'mlp.c_fc': 'ffn.layers.0.0', 'mlp.c_proj': 'ffn.layers.1'}
_REC_BLOCK = {'ln_1': 'norms.0', 'ln_2': 'norms.1', 'attn': 'attentions.0.attn',
              'mlp.c_fc': 'ffns.0.layers.0.0', 'mlp.c_proj': 'ffns.0.layers.1'}


def _block_key(rest: str, table: Dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old + '.'):
            return new + rest[len(old):]
    raise KeyError(f'unexpected parameter in a CLIP ViT block: {rest!r}')


def clip_to_san_state_dict(state: Dict[str, torch.Tensor],
                           split: int) -> Dict[str, torch.Tensor]:
    """SAN's ``image_encoder.*`` and ``decode_head.rec_with_attnbias.*`` weights from an
    open_clip CLIP state dict (text weights are dropped).

    Args:
        state: An open_clip ``CLIP`` state dict (``visual.*`` keys of a ViT tower).
        split: Blocks ``< split`` go to the image encoder, the others to the recognition
            layers (9 of 12 for SAN ViT-B/16).

    Raises:
        ValueError: ``state`` has no ViT image tower, or ``split`` leaves either side empty.
    """
    prefix = 'visual.transformer.resblocks.'
    blocks = {int(k[len(prefix):].split('.')[0]) for k in state if k.startswith(prefix)}
    if not blocks or 'visual.class_embedding' not in state:
        raise ValueError('not an open_clip ViT CLIP state dict (no visual.class_embedding or '
                         'visual.transformer.resblocks.* keys)')
    if not 1 <= split < len(blocks):
        raise ValueError(f'split must be in 1..{len(blocks) - 1} for a {len(blocks)}-block '
                         f'ViT, got {split!r}')
    out: Dict[str, torch.Tensor] = {
        'image_encoder.cls_token': state['visual.class_embedding'].reshape(1, 1, -1),
        'image_encoder.pos_embed': state['visual.positional_embedding'].unsqueeze(0),
        'image_encoder.patch_embed.projection.weight': state['visual.conv1.weight'],
        # open_clip's proj is x @ proj, [width, dim]; SAN's is an nn.Linear, [dim, width]
        'decode_head.rec_with_attnbias.proj.weight': state['visual.proj'].t().contiguous(),
    }
    for name in ('weight', 'bias'):
        out[f'image_encoder.ln_pre.{name}'] = state[f'visual.ln_pre.{name}']
        out[f'decode_head.rec_with_attnbias.ln_post.{name}'] = state[f'visual.ln_post.{name}']
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        index, rest = key[len(prefix):].split('.', 1)
        i = int(index)
        if i < split:
            out[f'image_encoder.layers.{i}.{_block_key(rest, _ENCODER_BLOCK)}'] = value
        else:
            out[f'decode_head.rec_with_attnbias.layers.{i - split}.'
                f'{_block_key(rest, _REC_BLOCK)}'] = value
    return out
