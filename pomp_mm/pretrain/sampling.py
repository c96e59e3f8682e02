"""Class sampling for POMP local contrast (Ren et al., NeurIPS 2023, arXiv 2304.04704).

Each training step contrasts the batch images against ``K'`` classes instead of all ``N``: the
unique classes of the batch (always included) plus negatives drawn without replacement from the
remaining classes, up to ``K'' = min(K, N)`` in total.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

SAMPLING_MODES = ('uniform', 'frequency', 'hard')

# A large prime keeps per-rank seeds apart even for neighbouring user seeds.
_RANK_SEED_STRIDE = 1000003


def poisson_inclusion(weights: torch.Tensor, m: int, tol: float = 1e-9) -> torch.Tensor:
    """Inclusion probabilities of ``m`` weighted draws without replacement (successive
    sampling, as ``torch.multinomial``), by the Poisson approximation
    ``pi_j = 1 - exp(-lambda * w_j)`` with ``sum_j pi_j = m`` (float64).

    ``min(1, m * p_j)`` instead is far off for a peaked distribution: heavy classes saturate,
    so light ones get too small a probability (4x at K = 1,000 of 21,841 Zipf-like counts),
    hence too large a margin.
    """
    w = weights.to(torch.float64)
    positive = int((w > 0).sum())
    if not 0 < m <= positive:
        raise ValueError(f'need 0 < m <= {positive} (classes of positive weight), got {m}')
    if m == positive:
        return (w > 0).to(torch.float64)
    # f(lam) = sum(1 - exp(-lam w)) - m is increasing and concave with f(m / sum w) <= 0:
    # Newton steps from there rise monotonically to the root
    lam = m / float(w.sum())
    for _ in range(100):
        e = torch.exp(-lam * w)
        f = float((1 - e).sum()) - m
        if abs(f) <= tol * m:
            break
        lam -= f / float((w * e).sum())
    return -torch.expm1(-lam * w)


class NegativeSampler:
    """Picks the classes contrasted at one POMP step.

    Args:
        num_classes: ``N``, size of the full vocabulary (>= 2).
        k: ``K``, the number of classes to contrast per step, positives included (>= 1).
        mode: ``'uniform'``; ``'frequency'`` (probability proportional to ``class_counts``);
            ``'hard'`` (probability proportional to ``softmax(s / hard_temperature)`` where ``s``
            is a class's highest cosine similarity to any positive class in the embedding bank
            set by :meth:`update_bank`).
        class_counts: Per-class counts, required by ``'frequency'`` (ignored otherwise). Classes
            with count 0 are never drawn as negatives.
        seed: Base seed of the sampler's private generator.
        rank: Distributed rank; the generator is seeded with ``seed + 1000003 * rank`` so ranks
            draw different negatives, each deterministically.
        hard_temperature: Softmax temperature of ``'hard'`` mode (> 0).
        refresh_interval: Steps after which :meth:`needs_refresh` asks for a new bank (>= 1).

    Note:
        In ``'frequency'`` mode, if fewer classes with non-zero count remain than negatives are
        wanted, only those are returned, so ``K'`` can be below ``min(K, N)``.
    """

    def __init__(self,
                 num_classes: int,
                 k: int,
                 mode: str = 'uniform',
                 class_counts: Optional[Sequence[int]] = None,
                 seed: int = 0,
                 rank: int = 0,
                 hard_temperature: float = 0.07,
                 refresh_interval: int = 1000) -> None:
        if int(num_classes) < 2:
            raise ValueError(f'num_classes must be >= 2, got {num_classes}')
        if int(k) < 1:
            raise ValueError(f'k must be >= 1, got {k}')
        if mode not in SAMPLING_MODES:
            raise ValueError(f'unknown sampling mode {mode!r}; '
                             f'expected one of {list(SAMPLING_MODES)}')
        if not hard_temperature > 0:
            raise ValueError(f'hard_temperature must be > 0, got {hard_temperature}')
        if int(refresh_interval) < 1:
            raise ValueError(f'refresh_interval must be >= 1, got {refresh_interval}')
        self.num_classes = int(num_classes)
        self.k = int(k)
        self.mode = mode
        self.seed = int(seed)
        self.rank = int(rank)
        self.hard_temperature = float(hard_temperature)
        self.refresh_interval = int(refresh_interval)

        self.class_counts: Optional[torch.Tensor] = None
        if mode == 'frequency':
            self.class_counts = self._check_counts(class_counts)

        # A private generator so sampling neither perturbs nor depends on the global RNG.
        self.generator = torch.Generator(device='cpu')
        self.generator.manual_seed(self.seed + _RANK_SEED_STRIDE * self.rank)

        self.bank: Optional[torch.Tensor] = None
        self.last_refresh_step: Optional[int] = None

    def set_class_counts(self, class_counts: Sequence[int]) -> None:
        """Replace the per-class counts of ``mode='frequency'`` (validated as at construction)."""
        if self.mode != 'frequency':
            raise ValueError(f"class_counts only apply to mode='frequency', not {self.mode!r}")
        self.class_counts = self._check_counts(class_counts)

    def _check_counts(self, class_counts: Optional[Sequence[int]]) -> torch.Tensor:
        if class_counts is None:
            raise ValueError("mode='frequency' requires class_counts (one count per class), "
                             'got None')
        counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten().cpu()
        if counts.numel() != self.num_classes:
            raise ValueError(f'class_counts has {counts.numel()} entries but num_classes is '
                             f'{self.num_classes}')
        if not torch.isfinite(counts).all():
            raise ValueError('class_counts must be finite')
        if (counts < 0).any():
            bad = int(torch.nonzero(counts < 0)[0])
            raise ValueError(f'class_counts must be non-negative; class {bad} has count '
                             f'{counts[bad].item()}')
        if not (counts > 0).any():
            raise ValueError('class_counts are all zero; no class could ever be sampled')
        return counts

    def _check_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor):
            labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.numel() == 0:
            raise ValueError('labels must be a non-empty 1-D tensor, '
                             f'got shape {tuple(labels.shape)}')
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise TypeError(f'labels must be an integer tensor, got {labels.dtype}')
        labels = labels.detach().cpu().long()
        bad = (labels < 0) | (labels >= self.num_classes)
        if bad.any():
            value = int(labels[bad][0])
            raise ValueError(f'label {value} is out of range [0, {self.num_classes})')
        return labels

    @staticmethod
    def _positives(labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Unique labels in first-appearance order, and each label's index among them."""
        uniq, inverse = torch.unique(labels, sorted=True, return_inverse=True)
        first = torch.full((uniq.numel(),), labels.numel(), dtype=torch.long)
        first.scatter_reduce_(0, inverse, torch.arange(labels.numel()), reduce='amin')
        order = torch.argsort(first)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel())
        return uniq[order], rank[inverse]

    def sample(self, labels: torch.Tensor, return_probs: bool = False
               ) -> Union[Tuple[torch.Tensor, torch.Tensor],
                          Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Draws the classes to contrast for a batch.

        Args:
            labels: ``[B]`` integer class ids in ``[0, N)``.
            return_probs: Also return each column's inclusion probability ``q`` (the
                local-correction margin of a non-target column is ``-log q``):

                * ``'uniform'``: ``(K' - 1) / (N - 1)`` for every column, the rate at which any
                  other class enters one image's softmax (paper Eq. 5 margin).
                * ``'frequency'`` / ``'hard'``: for a drawn negative ``j`` of weight ``w_j``,
                  the Poisson approximation of its inclusion probability in ``M = K' - P``
                  draws without replacement (``P`` batch positives, never drawn):
                  ``1 - exp(-lambda * w_j)`` with ``lambda`` solved so that the probabilities
                  of all non-positive classes sum to ``M`` (with equal weights exactly
                  ``M / (N - P)``), floored at ``1 / (N - 1)`` so that no margin exceeds
                  ``log(N - 1)``; batch positives keep the uniform value.

        Returns:
            ``class_ids`` ``[K']`` long (batch positives in first-appearance order, then the
            negatives), ``targets`` ``[B]`` long with ``class_ids[targets] == labels`` and, with
            ``return_probs``, ``probs`` ``[K']`` float64; all on ``labels``' device.

        Raises:
            RuntimeError: In ``'hard'`` mode before :meth:`update_bank` was called.
        """
        device = labels.device if isinstance(labels, torch.Tensor) else torch.device('cpu')
        labels = self._check_labels(labels)
        positives, targets = self._positives(labels)
        num_neg = max(0, min(self.k, self.num_classes) - positives.numel())
        negatives, weights = self._sample_negatives(positives, num_neg)
        class_ids = torch.cat([positives, negatives])
        if not return_probs:
            return class_ids.to(device), targets.to(device)
        num_contrasted = class_ids.numel()
        probs = torch.full((num_contrasted,), (num_contrasted - 1) / (self.num_classes - 1),
                           dtype=torch.float64)
        if weights is not None and negatives.numel():
            pi = poisson_inclusion(weights, negatives.numel())[negatives]
            probs[positives.numel():] = pi.clamp(min=1.0 / (self.num_classes - 1))
        return class_ids.to(device), targets.to(device), probs.to(device)

    def sample_shared_negatives(self, labels: torch.Tensor, num_neg: int,
                                return_probs: bool = False
                                ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Draws ``num_neg`` negatives for the whole batch from all ``N`` classes, the batch's
        own classes included (the official per-image contrast: a row rejects its own label).

        Args:
            labels: ``[B]`` class ids of the batch (the ``'hard'`` weights are their
                neighbours in the bank).
            num_neg: ``M``, in ``[1, N]``.
            return_probs: Also return each negative's inclusion probability (``None`` in
                ``'uniform'`` mode, where the per-row count gives the margin).

        Returns:
            ``neg_ids`` ``[M']`` long (without replacement; ``M' < M`` only when fewer
            classes have non-zero weight) and ``probs`` ``[M']`` float64 or None.
        """
        labels = self._check_labels(labels)
        if not 1 <= int(num_neg) <= self.num_classes:
            raise ValueError(f'per-image contrast draws 1..{self.num_classes} negatives from '
                             f'the {self.num_classes} classes, got {num_neg}')
        self._require_bank()
        if self.mode == 'uniform':
            return torch.randperm(self.num_classes, generator=self.generator)[:num_neg], None
        if self.mode == 'frequency':
            weights = self.class_counts
        else:
            none = torch.zeros(self.num_classes, dtype=torch.bool)
            weights = self._hard_weights(torch.unique(labels), none)
        num_neg = min(int(num_neg), int((weights > 0).sum()))
        picked = torch.multinomial(weights, num_neg, replacement=False, generator=self.generator)
        if not return_probs:
            return picked, None
        pi = poisson_inclusion(weights, num_neg)[picked]
        return picked, pi.clamp(min=1.0 / (self.num_classes - 1))

    def _require_bank(self) -> None:
        if self.mode == 'hard' and self.bank is None:
            raise RuntimeError("NegativeSampler(mode='hard') has no class-embedding bank; call "
                               'update_bank(embeddings) with [num_classes, D] class embeddings '
                               'before sample()')

    def _sample_negatives(self, positives: torch.Tensor, num_neg: int
                          ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Negatives, and the draw weights over all N classes (``None`` for uniform)."""
        self._require_bank()
        none = torch.empty(0, dtype=torch.long)
        if num_neg == 0:
            return none, None
        is_pos = torch.zeros(self.num_classes, dtype=torch.bool)
        is_pos[positives] = True

        if self.mode == 'uniform':
            candidates = torch.nonzero(~is_pos).squeeze(1)
            pick = torch.randperm(candidates.numel(), generator=self.generator)[:num_neg]
            return candidates[pick], None

        if self.mode == 'frequency':
            weights = self.class_counts.masked_fill(is_pos, 0.0)
        else:
            weights = self._hard_weights(positives, is_pos)
        # Without replacement multinomial fails if fewer non-zero weights than draws remain.
        num_neg = min(num_neg, int((weights > 0).sum()))
        if num_neg == 0:
            return none, weights
        picked = torch.multinomial(weights, num_neg, replacement=False, generator=self.generator)
        return picked, weights

    def _hard_weights(self, positives: torch.Tensor, is_pos: torch.Tensor) -> torch.Tensor:
        bank = self.bank
        sim = bank @ bank[positives.to(bank.device)].T  # [N, P]
        score = sim.max(dim=1).values.double().cpu() / self.hard_temperature
        probs = torch.softmax(score.masked_fill(is_pos, float('-inf')), dim=0)
        # A very sharp temperature could underflow far classes to 0 and shrink K'; keep every
        # negative reachable with a negligible floor instead.
        probs = probs.clamp_min(torch.finfo(torch.float64).tiny)
        return probs.masked_fill(is_pos, 0.0)

    def update_bank(self, embeddings: torch.Tensor, step: Optional[int] = None) -> None:
        """Sets the class-embedding bank used by ``'hard'`` mode.

        Args:
            embeddings: ``[N, D]`` class (text) embeddings; L2-normalised and detached here.
            step: Training step of this refresh, used by :meth:`needs_refresh`. ``None`` means the
                bank never expires by step count.
        """
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
            raise ValueError('embeddings must be a [num_classes, D] tensor')
        if embeddings.shape[0] != self.num_classes:
            raise ValueError(f'embeddings has {embeddings.shape[0]} rows but num_classes is '
                             f'{self.num_classes}')
        if not torch.isfinite(embeddings).all():
            raise ValueError('embeddings contain non-finite values')
        # float32 so fp16 text features do not lose resolution in the similarity softmax.
        self.bank = F.normalize(embeddings.detach().float(), dim=-1)
        self.last_refresh_step = None if step is None else int(step)

    def needs_refresh(self, step: int) -> bool:
        """Whether ``'hard'`` mode wants a new bank at ``step`` (always ``False`` otherwise)."""
        if self.mode != 'hard':
            return False
        if self.bank is None:
            return True
        if self.last_refresh_step is None:
            return False
        return int(step) - self.last_refresh_step >= self.refresh_interval

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, k={self.k}, '
                f'mode={self.mode!r}, seed={self.seed}, rank={self.rank})')
