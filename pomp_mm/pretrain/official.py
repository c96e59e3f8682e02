"""The official POMP training step, transcribed for side-by-side measurement.

amazon-science/prompt-pretraining, ``trainers/pomp.py`` at 871ef33 (``PromptLearner`` with the
class token at the end, ``TextEncoder``, ``CustomCLIP.forward`` with ``EPT`` and random negative
sampling): every prompt is ``[SOS, ctx, name tokens, '.', EOT, padding]`` at the full context
length, built from per-class token-embedding buffers made once for all ``N`` classes; a step
runs the ``B`` positives (one per image row, duplicates included) and ``M = K - 1`` negatives
through the text tower and applies the per-row log10 correction. pomp_mm's
``PompPretrainer(contrast='per_image', correction='log10', mask_duplicate_names=False)``
optimises the same loss; ``tools/benchmarks/pretrain.py --official`` times the two side by side.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..towers import ClipTower, TextTower

__all__ = ['OfficialPromptStep']


class OfficialPromptStep(nn.Module):
    """The official prompt learner and training step on an open_clip CLIP (weights shared).

    Args:
        clip: open_clip CLIP model (its text tower is used, frozen) or a
            :class:`~pomp_mm.towers.TextTower` (to share one with a ``PompPretrainer``).
        classnames: The ``N`` class names.
        n_ctx: Context vectors (random init, std 0.02, as the official code).
        num_sampled: ``K``; ``K - 1`` negatives per step.
        tokenizer: open_clip tokenizer of ``clip``.
    """

    def __init__(self, clip: nn.Module, classnames: Sequence[str], n_ctx: int,
                 num_sampled: int, tokenizer) -> None:
        super().__init__()
        if not 2 <= num_sampled <= len(classnames):
            raise ValueError(f'num_sampled must be in [2, {len(classnames)}], got {num_sampled}')
        self.tower = clip if isinstance(clip, TextTower) else ClipTower(clip)
        self.num_classes, self.n_ctx = len(classnames), n_ctx
        self.num_neg = num_sampled - 1
        prompts = [' '.join(['X'] * n_ctx) + ' ' + name.replace('_', ' ') + '.'
                   for name in classnames]
        # the tokenizer returns CPU ids; the tower may already sit on a GPU
        tokens = tokenizer(prompts).to(self.tower.device)
        with torch.no_grad():
            embedding = self.tower.embed_tokens(tokens)
        self.register_buffer('tokens', tokens, persistent=False)
        # [N, 1, D] and [N, L - 1 - n_ctx, D]: the official per-class buffers
        self.register_buffer('token_prefix', embedding[:, :1].clone(), persistent=False)
        self.register_buffer('token_suffix', embedding[:, 1 + n_ctx:].clone(), persistent=False)
        del embedding
        self.ctx = nn.Parameter(torch.randn(n_ctx, self.tower.width) * 0.02)

    def buffer_bytes(self) -> int:
        """Memory held by the per-class buffers (the official code keeps them for the
        training and again for the test classes; this counts one set)."""
        return sum(b.numel() * b.element_size() for b in (self.tokens, self.token_prefix,
                                                          self.token_suffix))

    def text_features(self, class_ids: torch.Tensor) -> torch.Tensor:
        """L2-normalised features of the prompts of ``class_ids`` (full context length)."""
        ctx = self.ctx.to(self.token_prefix.dtype).unsqueeze(0).expand(len(class_ids), -1, -1)
        prompts = torch.cat([self.token_prefix[class_ids], ctx, self.token_suffix[class_ids]],
                            dim=1)
        eot = self.tower.eot_index(self.tokens[class_ids])
        return F.normalize(self.tower(prompts, eot), dim=-1)

    def sample(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``K - 1`` negatives, uniform without replacement from all ``N`` classes."""
        return torch.randperm(self.num_classes, generator=generator)[:self.num_neg]

    def forward(self, image_features: torch.Tensor, labels: torch.Tensor,
                negatives: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Loss of one step for L2-normalised ``image_features`` [R, D] with class ``labels``
        [R] (one per row: views repeat their image's label); ``negatives`` default to
        :meth:`sample`."""
        device = image_features.device
        if negatives is None:
            negatives = self.sample(generator)
        labels, negatives = labels.to(device), negatives.to(device)
        text = self.text_features(torch.cat([labels, negatives]))
        pos, neg = text[:len(labels)], text[len(labels):]
        scale = self.tower.logit_scale.exp()
        logits_pos = scale * (image_features * pos).sum(dim=-1, keepdim=True)
        logits_neg = scale * image_features @ neg.T
        reject = labels[:, None] == negatives[None, :]
        logits_neg = logits_neg - 1e6 * reject
        kept = (self.num_neg - reject.sum(dim=-1, keepdim=True)).to(logits_neg)
        logits_neg = logits_neg + math.log10(self.num_classes - 1) - torch.log10(kept)
        logits = torch.cat([logits_pos, logits_neg], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(labels), dtype=torch.long,
                                                   device=device))
