"""Fixtures for tests, demos and CPU benchmarks: tiny models with random weights.

No registration side effects and no mmdet/mmseg imports: the toolkit fixtures are config
overrides, merged into the real configs so their structure stays the one users run.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

__all__ = ['TINY_SAN', 'tiny_detector', 'tiny_hf_clip', 'tiny_siglip_config',
           'write_clip_tokenizer', 'write_siglip_tokenizer']

#: Overrides that shrink the SAN ViT-B/16 configs to a tiny model with random weights (64-wide
#: 3-layer ViT, 10 queries, 64x64 inputs) for tests and benchmarks; pair it with
#: ``clip_model='tiny'`` (pomp_mm's tiny open_clip model) for the text side.
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

#: A tiny Faster / Mask R-CNN (ResNet-18 at 1/8 width, 16-channel FPN): merged into the R50-FPN
#: configs, it keeps their structure and trains in seconds.
_TINY: Dict[str, Any] = dict(
    backbone=dict(depth=18, base_channels=8, init_cfg=None),
    neck=dict(in_channels=[8, 16, 32, 64], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=16),
        bbox_head=dict(in_channels=16, fc_out_channels=32)),
    train_cfg=dict(rpn=dict(sampler=dict(num=64)), rcnn=dict(sampler=dict(num=32))),
)

_TINY_MASK: Dict[str, Any] = dict(
    roi_head=dict(
        mask_roi_extractor=dict(out_channels=16),
        mask_head=dict(in_channels=16, conv_out_channels=16)))


def tiny_detector(with_mask: bool = False) -> Dict[str, Any]:
    """Model overrides (a ``model=dict(...)`` to merge into an mmdet R50-FPN config)."""
    cfg = copy.deepcopy(_TINY)
    if with_mask:
        cfg['roi_head'].update(copy.deepcopy(_TINY_MASK['roi_head']))
    return cfg


def write_clip_tokenizer(folder: str, context_length: int = 77) -> str:
    """Write a Hugging Face CLIP tokenizer into ``folder`` (``save_pretrained`` files), built
    from open_clip's bundled BPE vocabulary: the merges of OpenAI's CLIP, so it tokenizes as
    ``openai/clip-vit-base-patch32``'s does, with no download.

    Returns:
        ``folder``.
    """
    import json
    import os

    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    vocab = dict(bpe.encoder)
    # open_clip spells the special tokens '<start_of_text>' / '<end_of_text>'; OpenAI's files
    # (and transformers) '<|startoftext|>' / '<|endoftext|>', at the same ids
    for theirs, ours in (('<|startoftext|>', bpe.sot_token_id), ('<|endoftext|>',
                                                                 bpe.eot_token_id)):
        vocab.pop(next(k for k, v in vocab.items() if v == ours))
        vocab[theirs] = ours
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'vocab.json'), 'w', encoding='utf-8') as f:
        json.dump(vocab, f)
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    with open(os.path.join(folder, 'merges.txt'), 'w', encoding='utf-8') as f:
        f.write('#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges))
    # read back through from_pretrained (the vocab-file arguments differ between transformers
    # 4 and 5), then saved whole: tokenizer_config.json, tokenizer.json
    CLIPTokenizer.from_pretrained(folder, model_max_length=context_length).save_pretrained(folder)
    return folder


def tiny_hf_clip(folder: str, seed: int = 0, hidden_act: str = 'quick_gelu',
                 eos_token_id: int = 49407, projection_dim: int = 32, **text: Any) -> str:
    """Save a tiny random Hugging Face ``CLIPModel`` (64-wide, 2-layer towers, 32x32 images,
    projection 32) and a CLIP tokenizer into ``folder``: a ``'transformers:<folder>'`` model
    for tests and demos.

    Args:
        folder: Output folder.
        seed: Seed of the random weights.
        hidden_act: Both towers' activation.
        eos_token_id: The text config's; 2 is the legacy value of OpenAI's configs (pool at
            the largest id), 49407 pools at the first end-of-text token.
        projection_dim: Width of the joint embedding space.
        **text: Other text-config overrides (``hidden_size=512, intermediate_size=2048,
            num_hidden_layers=12, num_attention_heads=8`` is ``clip-vit-base-patch32``'s).

    Returns:
        ``folder``.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel

    text_cfg = dict(vocab_size=49408, hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                    hidden_act=hidden_act, bos_token_id=49406, eos_token_id=eos_token_id,
                    pad_token_id=1, projection_dim=projection_dim)
    text_cfg.update(text)
    config = CLIPConfig(
        text_config=text_cfg,
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8,
                           hidden_act=hidden_act, projection_dim=projection_dim),
        projection_dim=projection_dim)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    write_clip_tokenizer(folder, text_cfg['max_position_embeddings'])
    return folder


#: Lines the tiny SigLIP tokenizer learns its pieces from (:func:`write_siglip_tokenizer`).
_SIGLIP_LINES = (
    'a photo of a cat', 'a photo of a dog', 'a photo of the hot dog', 'a drawing of a person',
    'a traffic light on a street', 'an x ray machine in a cafe', 'a bag of the person',
    'the quick brown fox jumps over the lazy dog', 'a bright photo of a large airplane',
    'a red car next to a green bus', 'itap of a bird', 'a blurry photo of the small boat',
    'a sculpture of a horse', 'a cropped photo of a toy', 'a close up photo of a keyboard',
    'art of the mountain', 'a rendering of a chair and a table', 'a tattoo of a flower',
    'the origami tiger', 'a black and white photo of the train', 'a pixelated photo of a lamp',
)


def write_siglip_tokenizer(folder: str, context_length: int = 64, vocab_size: int = 200,
                           pad_token: str = '</s>') -> str:
    """Write a tiny SigLIP-style Hugging Face tokenizer into ``folder`` (``save_pretrained``
    files, loadable by open_clip's ``HFTokenizer`` and ``AutoTokenizer``): a sentencepiece
    unigram model (``tokenizers``' trainer: NFKC, ``'▁'`` word boundaries) learned from a
    few lines, with T5's special tokens (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2), ``</s>``
    appended to every text and no start token, as ``timm/ViT-B-16-SigLIP``'s. Rows are padded
    with ``pad_token``: ``'</s>'`` (id 1) as big_vision's SigLIP (``pad_value=1``) and open_clip's
    ``SigLipTokenizer``, or ``'<pad>'`` (id 0). No download.

    Returns:
        ``folder``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(' +', ' ')])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement='\u2581', prepend_scheme='always')
    tok.decoder = decoders.Metaspace(replacement='\u2581', prepend_scheme='always')
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, unk_token='<unk>',
                                      special_tokens=['<pad>', '</s>', '<unk>'],
                                      show_progress=False)
    tok.train_from_iterator(list(_SIGLIP_LINES) * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single='$A </s>', pair='$A </s> $B </s>', special_tokens=[('</s>', 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token='</s>', pad_token=pad_token,
                            unk_token='<unk>', model_max_length=context_length
                            ).save_pretrained(folder)
    return folder


def tiny_siglip_config(tokenizer: str, context_length: int = 64, vocab_size: int = 200,
                       **text: Any) -> Dict[str, Any]:
    """A tiny open_clip config in the shape of ``ViT-B-16-SigLIP``'s (a ``CustomTextCLIP``
    with a logit bias; a bidirectional 64-wide, 2-layer text tower pooled at its last position,
    with a projection bias and layer-norm epsilon 1e-6; a 64-wide ViT on 32x32 images instead
    of timm's SigLIP ViT) whose tokenizer is the Hugging Face folder ``tokenizer``
    (:func:`write_siglip_tokenizer`).

    Args:
        tokenizer: The tokenizer folder (``hf_tokenizer_name``).
        context_length: The text context (SigLIP's 64).
        vocab_size: The tokenizer's vocabulary size (at least).
        **text: Other ``text_cfg`` overrides.
    """
    text_cfg = dict(context_length=context_length, vocab_size=vocab_size,
                    hf_tokenizer_name=tokenizer, tokenizer_kwargs={'clean': 'canonicalize'},
                    width=64, heads=2, layers=2, no_causal_mask=True, proj_bias=True,
                    pool_type='last', norm_kwargs={'eps': 1e-6})
    text_cfg.update(text)
    return dict(embed_dim=32, init_logit_bias=-10, custom_text=True,
                vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2,
                                head_width=32, mlp_ratio=2.0, norm_kwargs={'eps': 1e-6}),
                text_cfg=text_cfg)
