"""A YOLO-World language backbone that embeds class texts with a POMP prompt.

YOLO-World (AILab-CVC/YOLO-World, on mmyolo) gets its class embeddings from a language
backbone built inside ``MultiModalYOLOBackbone`` (``text_model=dict(type=...)``): a batch of
per-image text lists in, ``[B, N, D]`` L2-normalised embeddings out. Its own is
``HuggingCLIPLanguageBackbone`` (the ``openai/clip-vit-base-patch32`` text tower on the raw
texts). :class:`PompLanguageBackbone` keeps that contract and embeds the texts through
:class:`~pomp_mm.PompTextEncoder` instead: a POMP prompt (or hand templates) on any CLIP
pomp_mm takes, ``'transformers:<folder>'`` included. A config swaps it in with
``custom_imports=dict(imports=['pomp_mm.yolo_world'])`` (it lives in mmengine's root
``MODELS`` registry, which mmyolo's registry falls back to); mmyolo itself is not imported.

For the offline-vocabulary flow (``reparameterize_yoloworld.py``, ``SimpleYOLOWorldDetector``'s
``embedding_path``) see ``tools/export_embeddings.py --format yolo-world``.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.model import BaseModule
from mmengine.registry import MODELS

from .clip import ClipSpec
from .towers.hf_clip import HF_PREFIX
from .templates import TemplateSpec
from .text_encoder import PompTextEncoder

__all__ = ['PompLanguageBackbone']

logger = logging.getLogger(__name__)


@MODELS.register_module()
class PompLanguageBackbone(BaseModule):
    """Frozen POMP text encoder with the forward contract of YOLO-World's
    ``HuggingCLIPLanguageBackbone``.

    Args:
        model_name: ``HuggingCLIPLanguageBackbone``'s argument (a hub id or a folder saved from
            it): the CLIP is ``'transformers:<model_name>'`` when ``clip_model`` is not given, so
            a YOLO-World config swaps backbones by changing ``type`` and adding ``prompt``.
        clip_model: Any :class:`~pomp_mm.PompTextEncoder` CLIP spec, in place of
            ``model_name`` (which a merged base config may still carry: ignored then).
        pretrained: open_clip tag or weights file (open_clip models only).
        prompt: A POMP / CoOp prompt checkpoint; None embeds ``templates``.
        templates: Hand templates without a prompt; ``'{}'`` (the default) is the raw text,
            as ``HuggingCLIPLanguageBackbone`` embeds it.
        class_token_position: Overrides an official checkpoint's (see PompTextEncoder).
        cache_size: Vocabularies (distinct text lists) whose embeddings are kept.
        chunk_size: Texts per text-tower call.
        frozen_modules: Accepted for config compatibility; the encoder is always frozen.
        dropout: Accepted for config compatibility; a frozen encoder runs without dropout.
        training_use_cache: Accepted for config compatibility; frozen embeddings are cached in
            training too.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self,
                 model_name: Optional[str] = None,
                 clip_model: Optional[ClipSpec] = None,
                 pretrained: Optional[str] = None,
                 prompt: Optional[str] = None,
                 templates: TemplateSpec = '{}',
                 class_token_position: Optional[str] = None,
                 cache_size: int = 8,
                 chunk_size: int = 1024,
                 frozen_modules: Sequence[str] = ('all',),
                 dropout: float = 0.0,
                 training_use_cache: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        if cache_size < 1:
            raise ValueError(f'cache_size must be >= 1, got {cache_size}')
        if clip_model is None:
            if not model_name:
                raise ValueError('give model_name (a Hugging Face CLIP hub id or folder, as '
                                 'HuggingCLIPLanguageBackbone takes) or clip_model')
            clip_model = HF_PREFIX + model_name
        elif model_name:
            logger.info('PompLanguageBackbone: clip_model=%r given; model_name=%r is not used',
                        clip_model, model_name)
        self.encoder = PompTextEncoder(
            clip_model=clip_model, pretrained=pretrained, prompt=prompt, templates=templates,
            class_token_position=class_token_position, vocabulary=['object'],  # per call
            cat_bg=False, chunk_size=chunk_size, cache_feature=False)
        self.cache_size = cache_size
        self._cache: 'OrderedDict[Tuple[str, ...], torch.Tensor]' = OrderedDict()
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def embed_dim(self) -> int:
        """D, the width of the embeddings."""
        return self.encoder.tower.output_dim

    def _embed(self, texts: Tuple[str, ...], use_cache: bool) -> torch.Tensor:
        hit = self._cache.get(texts) if use_cache else None
        device = self.encoder.tower.token_embedding.weight.device
        if hit is None or hit.device != device:
            unique = list(dict.fromkeys(texts))  # every image of a batch often has the same list
            with torch.no_grad():
                emb = self.encoder.encode_names(unique)
            row = {t: i for i, t in enumerate(unique)}
            hit = emb[torch.tensor([row[t] for t in texts], device=emb.device)]
            if use_cache:
                self._cache[texts] = hit
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        elif use_cache:
            self._cache.move_to_end(texts)
        return hit

    def _check(self, text: Sequence[Sequence[str]]) -> List[List[str]]:
        if isinstance(text, str) or not text or any(isinstance(t, str) for t in text):
            raise TypeError('text must be a list of per-image text lists, e.g. '
                            f"[['person', 'bus']], got {text!r:.80}")
        counts = [len(t) for t in text]
        if min(counts) != max(counts):
            raise ValueError(f'every image needs the same number of texts, got {counts}')
        if counts[0] == 0:
            raise ValueError('no texts to embed')
        return [list(t) for t in text]

    def forward_text(self, text: Sequence[Sequence[str]]) -> torch.Tensor:
        """Embeddings [B, N, D] of ``text`` (B lists of N strings), computed afresh."""
        return self._forward(text, use_cache=False)

    def forward_cache(self, text: Sequence[Sequence[str]]) -> torch.Tensor:
        """:meth:`forward_text`, read from the cache when the same vocabulary was embedded."""
        return self._forward(text, use_cache=True)

    def forward(self, text: Sequence[Sequence[str]]) -> torch.Tensor:
        """L2-normalised float32 embeddings [B, N, D] of B per-image lists of N texts, on the
        encoder's device (cached per vocabulary: the encoder is frozen)."""
        return self.forward_cache(text)

    def _forward(self, text: Sequence[Sequence[str]], use_cache: bool) -> torch.Tensor:
        lists = self._check(text)
        first = tuple(lists[0])
        # copies: a caller writing into its embeddings must not change the cache
        if all(tuple(t) == first for t in lists[1:]):  # one vocabulary for the batch
            return self._embed(first, use_cache).unsqueeze(0).repeat(len(lists), 1, 1)
        flat = tuple(t for texts in lists for t in texts)
        return self._embed(flat, use_cache).reshape(len(lists), len(first), -1).clone()

    def clear_cache(self) -> None:
        """Forget cached embeddings (after changing the prompt or the weights)."""
        self._cache.clear()

    def train(self, mode: bool = True) -> 'PompLanguageBackbone':
        super().train(mode)
        self.encoder.eval()  # frozen, whatever the runner asks
        return self

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._cache.clear()  # new weights: old embeddings are stale
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return f'cache_size={self.cache_size}'

