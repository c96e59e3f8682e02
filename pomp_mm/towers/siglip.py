"""The SigLIP family: open_clip ``ViT-B-16-SigLIP`` and kin, for prompt learning.

A SigLIP text tower differs from CLIP's in three ways that shape a prompt:

* attention is bidirectional (``no_causal_mask``): every position sees every other, padding
  included, so a prompt always runs at the tower's full context length (64 tokens for most
  SigLIP models, 16 for ``ViT-SO400M-14-SigLIP``), with no truncation and no shared prefix;
* the text is pooled at the *last* position (``pool_type='last'``), a padding token for any
  prompt shorter than the context;
* the tokenizer is a Hugging Face (sentencepiece) one, loaded by open_clip's ``HFTokenizer``:
  texts are cleaned (``clean='canonicalize'``: punctuation removed, lower case), no start token
  is added, the tokenizer's own end token (``</s>``) follows the text, and rows are padded with
  its pad id to the context length.

So a learned prompt for ``name`` is ``[ctx_1 .. ctx_n] + tokens(name) + [</s>] + [pad] * ...``
(the context first, the name after, ``class_token_position='end'``), and with ``ctx``
initialised from ``'a photo of a'`` it equals ``encode_text(tokenizer('a photo of a {name}.'))``.
:class:`SigLipTokenizer` wraps open_clip's tokenizer and tells the prompt learner that layout;
:class:`SigLipTower` runs whole prompts only.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union

import torch
from torch import nn

from .base import TextTower, open_clip_tokenizer

__all__ = ['SigLipTokenizer', 'SigLipTower', 'is_hf_tokenizer', 'siglip_tokenizer']


def is_hf_tokenizer(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` is open_clip's ``HFTokenizer`` (SigLIP's, and other models')."""
    from open_clip.tokenizer import HFTokenizer as OpenClipHF
    return isinstance(tokenizer, OpenClipHF)


class SigLipTokenizer:
    """The part of open_clip's ``SimpleTokenizer`` pomp_mm uses, over open_clip's
    ``HFTokenizer`` of a SigLIP-style model (no start token, an end token, pad to the context).

    :meth:`__call__` is open_clip's own (what ``encode_text`` users tokenize with);
    :meth:`encode` cleans a text as it does and returns its ids without special tokens.

    Attributes:
        sot_token_id: None: SigLIP texts have no start token (the prompt learner then puts the
            context at position 0).
        eot_token_id: The id the tokenizer appends to every text (``</s>``), or None if it
            appends nothing.
        pad_token_id: The id rows are padded with.

    Raises:
        TypeError: for an ``HFTokenizer`` this layout does not describe (a start token such as
            BERT's ``[CLS]``, the ``'clips'`` mode, ``strip_sep_token``, no pad token).
    """

    def __init__(self, tokenizer: Any, context_length: Optional[int] = None):
        self.open_clip_tokenizer = tokenizer
        self.tokenizer = tokenizer.tokenizer
        self.context_length: int = context_length or tokenizer.context_length
        self.clean_fn = tokenizer.clean_fn
        name = getattr(self.tokenizer, 'name_or_path', type(self.tokenizer).__name__)
        if getattr(tokenizer, 'tokenizer_mode', '') or getattr(tokenizer, 'strip_sep_token',
                                                                 False):
            raise TypeError(f'open_clip HFTokenizer {name!r} with tokenizer_mode='
                            f'{tokenizer.tokenizer_mode!r}, strip_sep_token='
                            f'{tokenizer.strip_sep_token}: pomp_mm prompts support SigLIP-style '
                            'tokenizers only (no start token, an end token, padding)')
        self.pad_token_id: Optional[int] = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            raise TypeError(f'tokenizer {name!r} has no pad token; open_clip pads SigLIP texts '
                            'to the context length with it')
        probe = 'a b'
        bare = self.encode(probe)
        full = list(self.tokenizer(self.clean_fn(probe))['input_ids'])
        if full[:len(bare)] != bare or len(full) - len(bare) > 1:
            raise TypeError(f'tokenizer {name!r} adds {full} around the text {bare}: pomp_mm '
                            'prompts support SigLIP-style tokenizers (no start token, at most '
                            'one end token)')
        self.sot_token_id: Optional[int] = None
        self.eot_token_id: Optional[int] = full[-1] if len(full) > len(bare) else None

    @property
    def num_special(self) -> int:
        """Special tokens around each text (the end token, if any)."""
        return int(self.eot_token_id is not None)

    def encode(self, text: str) -> List[int]:
        """Ids of ``text`` cleaned as open_clip cleans it, without special tokens."""
        return list(self.tokenizer(self.clean_fn(text), add_special_tokens=False)['input_ids'])

    def __call__(self, texts: Union[str, Sequence[str]],
                 context_length: Optional[int] = None) -> torch.Tensor:
        """Token ids [B, context_length], exactly as open_clip's ``HFTokenizer``."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.open_clip_tokenizer(texts, context_length or self.context_length)


def siglip_tokenizer(clip_model: Any, context_length: int) -> SigLipTokenizer:
    """open_clip's tokenizer for ``clip_model``, wrapped.

    Raises:
        TypeError: if it is not a Hugging Face tokenizer of SigLIP's layout.
    """
    tokenizer = open_clip_tokenizer(clip_model, context_length)
    if not is_hf_tokenizer(tokenizer):
        raise TypeError(f'{clip_model!r} has a bidirectional text tower but a '
                        f'{type(tokenizer).__name__}; pomp_mm prompts a bidirectional tower '
                        "through SigLIP's Hugging Face tokenizer only")
    return SigLipTokenizer(tokenizer, context_length)


class SigLipTower(TextTower):
    """A bidirectional text tower pooled at its last position (SigLIP).

    Args:
        clip: An open_clip ``CustomTextCLIP`` whose text transformer has no causal mask.
        tokenizer: Its :class:`SigLipTokenizer` (:func:`siglip_tokenizer`).
    """

    family = 'siglip'
    causal = False

    def __init__(self, clip: nn.Module, tokenizer: Any = None):
        super().__init__(clip, tokenizer)
        if self.pool_type != 'last':
            raise TypeError(f'the text tower has no causal attention mask and pools at '
                            f'{self.pool_type!r}; POMP prompts need a causal (CLIP-style) text '
                            'transformer or a bidirectional one pooled at the last position '
                            "(SigLIP, pool_type='last')")

    def eot_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """The last position, whatever token is there."""
        return torch.full(tokens.shape[:1], tokens.shape[1] - 1, dtype=torch.long,
                          device=tokens.device)

    def forward(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Features of whole prompts [B, context_length, width]: every position counts,
        padding included."""
        if x.shape[1] != self.context_length:
            raise ValueError(f'a bidirectional text tower runs whole prompts of '
                             f'{self.context_length} tokens, got {x.shape[1]}')
        x = x + self.positional_embedding.to(x.dtype)
        return self._pool(self.ln_final(self.transformer(x, attn_mask=None)), eot)
