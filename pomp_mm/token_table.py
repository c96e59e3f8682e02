"""The prompt token ids of a whole vocabulary, built once and kept on the model's device.

A pre-training step names its classes by vocabulary index; with the table it gathers their
token ids, lengths and (class-specific context) context rows by index, with no per-class Python
work, no strings and no device-to-host copies.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .prompt_learner import PromptBatch, PromptLearner

__all__ = ['TokenTable']


class TokenTable:
    """Tokenized prompts ``"X ... X {name}."`` of every class of a vocabulary.

    Args:
        learner: The prompt learner whose layout (``n_ctx``, class-specific rows) the prompts
            follow.
        names: The vocabulary's class names, in index order.
        tokenizer: The text tower's BPE tokenizer.
        context_length: The text tower's context length.
        device: Where the token ids live (the text tower's device).

    Attributes:
        tokens: Token ids [N, L] on ``device``, ``L`` the longest prompt of the vocabulary.
        name_lens: Name tokens per class [N] on ``device``.
        lengths: Prompt length (EOT position + 1) per class [N], on the host: a step sizes its
            layout from it without a device sync.
        csc_rows: Row of a class-specific ``ctx`` per class [N] on ``device``, or None.
    """

    def __init__(self, learner: PromptLearner, names: Sequence[str], tokenizer,
                 context_length: int, device: torch.device) -> None:
        self.names, self.learner = names, learner
        self.context_length, self.device = context_length, torch.device(device)
        names = list(names)
        batch = learner.tokenize(names, tokenizer, context_length)
        self.lengths = batch.eot + 1
        width = int(self.lengths.max())
        self.tokens = batch.tokens[:, :width].to(device)
        self.name_lens = batch.name_lens.to(device)
        rows = learner.class_indices(names)
        self.csc_rows = None if rows is None else rows.to(device)

    def serves(self, learner: PromptLearner, names: Sequence[str], context_length: int,
               device: torch.device) -> bool:
        """Whether this table holds ``names`` (the same object) for ``learner`` on ``device``;
        otherwise it must be rebuilt."""
        return (names is self.names and learner is self.learner
                and context_length == self.context_length
                and torch.device(device) == self.device)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def select(self, class_ids: torch.Tensor) -> PromptBatch:
        """The prompts of ``class_ids`` [K] (host tensor): tokens on the table's device, EOT
        positions on the host."""
        ids = class_ids.to('cpu')
        on_device = ids.to(self.device, non_blocking=True)
        return PromptBatch(self.tokens[on_device], self.name_lens[on_device],
                           self.lengths[ids] - 1)

    def csc_index(self, class_ids: torch.Tensor) -> Optional[torch.Tensor]:
        if self.csc_rows is None:
            return None
        return self.csc_rows[class_ids.to(self.device, non_blocking=True)]
