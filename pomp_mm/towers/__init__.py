"""Text towers of the CLIP family that carry a POMP prompt, one module per family.

Every family implements :class:`TextTower` (token embeddings, encoder, pooling, projection, a
tokenizer, and :meth:`TextTower.encode`):

* :mod:`~pomp_mm.towers.clip`: open_clip's causal CLIP towers (OpenAI, LAION, ...);
* :mod:`~pomp_mm.towers.hf_clip`: Hugging Face ``CLIPModel`` towers (YOLO-World's), mapped
  onto the CLIP family;
* :mod:`~pomp_mm.towers.siglip`: SigLIP's bidirectional towers.

A prompt's data goes one way: :class:`~pomp_mm.PompTextEncoder` tokenizes and chunks, the prompt
learner lays the prompts out (:class:`~pomp_mm.prompt_learner.PromptEmbeddings`), the tower
encodes them, and its family picks the attention kernel (:mod:`pomp_mm.varlen`,
:mod:`pomp_mm.shared_prefix`, or the model's own blocks).
"""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

from .base import TextTower
from .clip import ClipTower, clip_tokenizer
from .hf_clip import HfClipTower, hf_tokenizer, is_hf_spec
from .siglip import SigLipTower, siglip_tokenizer

__all__ = ['TextTower', 'ClipTower', 'HfClipTower', 'SigLipTower', 'build_text_tower',
           'tower_family']


def tower_family(clip: nn.Module, clip_model: Optional[Any] = None) -> type:
    """The :class:`TextTower` class of ``clip``'s text tower: Hugging Face CLIP when
    ``clip_model`` names one, SigLIP when attention is bidirectional, else CLIP."""
    if is_hf_spec(clip_model):
        return HfClipTower
    text = getattr(clip, 'text', clip)
    return ClipTower if getattr(text, 'attn_mask', None) is not None else SigLipTower


def build_text_tower(clip: nn.Module, clip_model: Optional[Any] = None) -> TextTower:
    """The text tower of an open_clip model, with its family's tokenizer.

    Args:
        clip: The open_clip model :func:`~pomp_mm.clip.build_clip` built.
        clip_model: The spec it was built from (model name, config dict or
            ``'transformers:...'``), which names the tokenizer; None: CLIP's BPE tokenizer
            for a causal tower, none for a bidirectional one.

    Raises:
        TypeError: for a tower no family can prompt, naming why.
    """
    family = tower_family(clip, clip_model)
    tower = family(clip)  # checks the structure before any tokenizer is loaded
    if family is HfClipTower:
        tower.tokenizer = hf_tokenizer(clip_model, tower.context_length)
    elif clip_model is not None:
        load = clip_tokenizer if family is ClipTower else siglip_tokenizer
        tower.tokenizer = load(clip_model, tower.context_length)
    elif family is ClipTower:
        from open_clip.tokenizer import SimpleTokenizer
        tower.tokenizer = SimpleTokenizer(context_length=tower.context_length)
    return tower
