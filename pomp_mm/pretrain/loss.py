"""POMP local-contrast loss with local correction (Ren et al., NeurIPS 2023, arXiv 2304.04704).

Contrasting against ``K'`` of ``N`` classes underestimates the softmax denominator; local correction
adds a margin ``m = log((N - 1) / (K' - 1))`` to every non-target logit so each sampled negative
stands in for ``(N - 1) / (K' - 1)`` classes (paper Eq. 5).

That margin is ``-log q`` for the uniform inclusion probability ``q = (K' - 1) / (N - 1)``. For
non-uniform draws (``sampling='frequency'`` or ``'hard'``) a uniform margin is the wrong
correction; there each drawn negative ``j`` gets ``-log q_j`` with ``q_j`` its own inclusion
probability (the sampled-softmax logQ correction, as the official code's non-random branch
subtracts ``log(prob)`` per drawn negative), see :meth:`NegativeSampler.sample
<pomp_mm.pretrain.NegativeSampler.sample>`. ``correction='log10'`` uses ``-log10 q`` instead.

The margin is added to the *scaled* logits (``logit_scale * cos + m``), which is where the official
implementation (amazon-science/prompt-pretraining, ``trainers/pomp.py``) adds it. Two differences
from that code in :func:`pomp_loss` (``contrast='shared'``), on purpose: the official code uses
``log10`` (our ``correction='log10'``; the default here is the paper's natural log) and applies it
only to the sampled out-of-batch negatives, with a per-image negative count; here the margin goes
on every non-target column, including the other images' positives (which are not drawn by the
sampler and always get the uniform margin). :func:`per_image_logits` is the official computation
itself (``PompPretrainer(contrast='per_image')``).
"""
import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

CORRECTIONS = ('ln', 'log10', 'none')


def correction_margin(num_classes: int, num_contrasted: int, correction: str = 'ln') -> float:
    """Local-correction margin ``log((N - 1) / (K' - 1))``.

    Args:
        num_classes: ``N``, the full vocabulary size (>= 2).
        num_contrasted: ``K'``, the number of classes actually contrasted (1..N).
        correction: ``'ln'`` (paper), ``'log10'`` (official code) or ``'none'`` (0).

    Returns:
        The margin; 0 when ``K' == 1`` (no non-target column exists, and the ratio would divide by
        zero) and when ``K' == N`` (``log 1``).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f'unknown correction {correction!r}; '
                         f'expected one of {list(CORRECTIONS)}')
    if num_classes < 2:
        raise ValueError(f'num_classes must be >= 2, got {num_classes}')
    if not 1 <= num_contrasted <= num_classes:
        raise ValueError(f'num_contrasted must be in [1, num_classes={num_classes}], '
                         f'got {num_contrasted}')
    if correction == 'none' or num_contrasted == 1:
        return 0.0
    ratio = (num_classes - 1) / (num_contrasted - 1)
    return math.log(ratio) if correction == 'ln' else math.log10(ratio)


def local_contrast_logits(image_features: Tensor, text_features: Tensor,
                          logit_scale: Union[Tensor, float]) -> Tensor:
    """Scaled cosine logits ``logit_scale * image_features @ text_features.T``.

    Args:
        image_features: ``[B, D]``, assumed L2-normalised.
        text_features: ``[K', D]`` features of the contrasted classes, assumed L2-normalised.
        logit_scale: The multiplier itself (CLIP's ``logit_scale.exp()``), not its log.

    Returns:
        ``[B, K']`` logits.
    """
    if image_features.dim() != 2 or text_features.dim() != 2:
        raise ValueError(f'expected [B, D] and [K, D] features, got {tuple(image_features.shape)} '
                         f'and {tuple(text_features.shape)}')
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(f'feature dims differ: image {image_features.shape[1]} vs text '
                         f'{text_features.shape[1]}')
    return logit_scale * image_features @ text_features.T


def pomp_loss(logits: Tensor, targets: Tensor, num_classes: int, correction: str = 'ln',
              inclusion_probs: Optional[Tensor] = None,
              ignore: Optional[Tensor] = None) -> Tensor:
    """Cross-entropy over the contrasted classes with local correction, averaged over the batch.

    Args:
        logits: ``[B, K']`` scaled logits over the contrasted classes.
        targets: ``[B]`` index of each image's class within the ``K'`` columns.
        num_classes: ``N``, the full vocabulary size.
        correction: ``'ln'``, ``'log10'`` or ``'none'``; see :func:`correction_margin`.
        inclusion_probs: ``[K']`` inclusion probability ``q_j`` of each column, in ``(0, 1]``
            (:meth:`NegativeSampler.sample(..., return_probs=True)
            <pomp_mm.pretrain.NegativeSampler.sample>`); non-target column ``j`` then gets the
            margin ``-log q_j`` (``-log10 q_j`` for ``'log10'``). ``None``: the uniform margin of
            :func:`correction_margin` on every non-target column.
        ignore: ``[B, K']`` bool, columns left out of each row's softmax (e.g. classes with the
            same prompt text as the row's target); never a row's own target.

    Returns:
        Scalar loss.
    """
    if logits.dim() != 2:
        raise ValueError(f'logits must be [B, K], got shape {tuple(logits.shape)}')
    if targets.shape != logits.shape[:1]:
        raise ValueError(f'targets must have shape [{logits.shape[0]}], got {tuple(targets.shape)}')
    num_contrasted = logits.shape[1]
    targets = targets.long()
    _check(((targets < 0) | (targets >= num_contrasted)).any(),
           f'targets must index the {num_contrasted} contrasted columns')
    margin = correction_margin(num_classes, num_contrasted, correction)
    if inclusion_probs is not None and correction != 'none' and num_contrasted > 1:
        margins = _column_margins(inclusion_probs, num_contrasted, correction)
        non_target = torch.ones_like(logits, dtype=torch.bool)
        non_target[torch.arange(logits.shape[0], device=logits.device), targets] = False
        margins = margins.to(logits.device, logits.dtype, non_blocking=True)
        logits = torch.where(non_target, logits + margins, logits)
    elif margin != 0.0:
        non_target = torch.ones_like(logits, dtype=torch.bool)
        non_target[torch.arange(logits.shape[0], device=logits.device), targets] = False
        logits = logits + margin * non_target.to(logits.dtype)
    if ignore is not None:
        if ignore.shape != logits.shape:
            raise ValueError(f'ignore must have shape {tuple(logits.shape)}, got '
                             f'{tuple(ignore.shape)}')
        ignore = ignore.to(logits.device, non_blocking=True)
        rows = torch.arange(logits.shape[0], device=logits.device)
        _check(ignore[rows, targets].any(), 'ignore masks a target column')
        logits = logits.masked_fill(ignore, float('-inf'))
    return F.cross_entropy(logits, targets)


def _check(bad: Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` where ``bad`` (a bool scalar) holds; on a GPU the check
    runs on the device (``torch._assert_async``) instead of stalling the host for the value."""
    if bad.device.type == 'cpu':
        if bool(bad):
            raise ValueError(message)
    else:
        torch._assert_async(~bad, message)


def _check_probs(inclusion_probs: Tensor, num_columns: int) -> Tensor:
    """``inclusion_probs`` as float64 after checking shape ``[num_columns]`` and range."""
    probs = torch.as_tensor(inclusion_probs, dtype=torch.float64)
    if probs.shape != (num_columns,):
        raise ValueError(f'inclusion_probs must have shape [{num_columns}] (one per '
                         f'column), got {tuple(probs.shape)}')
    bad = ~((probs > 0) & (probs <= 1))
    if bad.any():
        j = int(torch.nonzero(bad)[0])
        raise ValueError(f'inclusion_probs must be in (0, 1]; column {j} has '
                         f'{probs[j].item()!r}')
    return probs


def _column_margins(inclusion_probs: Tensor, num_contrasted: int, correction: str) -> Tensor:
    """Per-column margins ``-log q`` (float64) of validated inclusion probabilities."""
    probs = _check_probs(inclusion_probs, num_contrasted)
    return -(probs.log() if correction == 'ln' else probs.log10())


def per_image_logits(image_features: Tensor, pos_text: Tensor, neg_text: Tensor, labels: Tensor,
                     neg_labels: Tensor, logit_scale: Union[Tensor, float], num_classes: int,
                     correction: str = 'log10', inclusion_probs: Optional[Tensor] = None,
                     ignore: Optional[Tensor] = None) -> Tensor:
    """Logits of the official POMP step: each row is ``[own positive, the M sampled negatives]``.

    The ``M`` negatives are drawn once for the whole batch from all ``N`` classes; other rows'
    positives are not columns. A negative equal to the row's own label is rejected (``-1e6``,
    as the official code). Local correction on the negatives:

    * ``inclusion_probs is None`` (the official ``random`` mode): ``+log(N - 1) - log(n_i)``
      with ``n_i`` the number of row ``i``'s negatives that were not rejected;
    * otherwise ``-log q_j`` with ``q_j`` the probability the sampler gave negative ``j``.

    ``log`` is ``log10`` for ``correction='log10'`` (the official code), ``ln`` for ``'ln'``
    (the paper); ``'none'`` adds nothing.

    Args:
        image_features: ``[B, D]``, L2-normalised.
        pos_text: ``[B, D]`` text feature of each row's own class, L2-normalised.
        neg_text: ``[M, D]`` text features of the sampled negatives, L2-normalised.
        labels: ``[B]`` each row's class id in ``[0, N)``.
        neg_labels: ``[M]`` class id of each negative.
        logit_scale: The multiplier (CLIP's ``logit_scale.exp()``).
        num_classes: ``N``.
        correction: ``'log10'``, ``'ln'`` or ``'none'``.
        inclusion_probs: ``[M]`` in ``(0, 1]``, or None for the uniform (random-mode) margin.
        ignore: ``[B, M]`` bool, more negatives to reject per row (e.g. classes whose prompt
            is the same text as the row's); they count as rejected in ``n_i``.

    Returns:
        ``[B, 1 + M]`` logits; the target of every row is column 0.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f'unknown correction {correction!r}; '
                         f'expected one of {list(CORRECTIONS)}')
    if num_classes < 2:
        raise ValueError(f'num_classes must be >= 2, got {num_classes}')
    if image_features.dim() != 2 or pos_text.shape != image_features.shape:
        raise ValueError(f'expected [B, D] image features and [B, D] positive text features, '
                         f'got {tuple(image_features.shape)} and {tuple(pos_text.shape)}')
    if neg_text.dim() != 2 or neg_text.shape[1] != image_features.shape[1]:
        raise ValueError(f'neg_text must be [M, {image_features.shape[1]}], got '
                         f'{tuple(neg_text.shape)}')
    num_rows, num_neg = image_features.shape[0], neg_text.shape[0]
    labels = torch.as_tensor(labels).to(image_features.device, non_blocking=True)
    neg_labels = torch.as_tensor(neg_labels).to(image_features.device, non_blocking=True)
    if labels.shape != (num_rows,) or neg_labels.shape != (num_neg,):
        raise ValueError(f'labels must be [{num_rows}] and neg_labels [{num_neg}], got '
                         f'{tuple(labels.shape)} and {tuple(neg_labels.shape)}')
    pos = logit_scale * (image_features * pos_text).sum(dim=-1, keepdim=True)
    neg = logit_scale * image_features @ neg_text.T
    reject = labels[:, None] == neg_labels[None, :]
    if ignore is not None:
        if ignore.shape != (num_rows, num_neg):
            raise ValueError(f'ignore must have shape {(num_rows, num_neg)}, got '
                             f'{tuple(ignore.shape)}')
        reject = reject | ignore.to(reject.device, torch.bool, non_blocking=True)
    neg = neg - 1e6 * reject.to(neg.dtype)
    if correction != 'none' and num_neg:
        log = torch.log10 if correction == 'log10' else torch.log
        if inclusion_probs is None:
            # a row whose only negative was rejected would divide by zero (official code: NaN)
            kept = (num_neg - reject.sum(dim=-1, keepdim=True)).clamp(min=1).to(neg.dtype)
            neg = neg + log(torch.tensor(num_classes - 1.0, dtype=neg.dtype)) - log(kept)
        else:
            margins = log(_check_probs(inclusion_probs, num_neg))
            neg = neg - margins.to(neg.device, neg.dtype, non_blocking=True)
    return torch.cat([pos, neg], dim=1)
