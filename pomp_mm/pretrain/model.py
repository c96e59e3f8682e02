"""The prompt pre-training model: frozen CLIP image and text towers, one learned prompt, and the
POMP loss (local contrast over K sampled classes + local correction)."""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.registry import MODELS

from ..clip import (ClipSpec, build_clip, image_features, sampled_fingerprint,
                    weights_fingerprint)
from ..text_encoder import PompTextEncoder, resolve_attention_arg
from ..vocabulary import VocabularyLike, first_difference, parse_vocabulary
from .loss import local_contrast_logits, per_image_logits, pomp_loss
from .sampling import NegativeSampler

__all__ = ['PompPretrainer', 'CONTRASTS']

#: How a step's softmax rows are formed (see :class:`PompPretrainer`).
CONTRASTS = ('shared', 'per_image')


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on the step's device without a blocking copy (a GPU step makes none)."""
    return t.to(device, non_blocking=True)


def _step_seed(seed: int, rank: int, step: int) -> int:
    digest = hashlib.blake2b(f'{seed}/{rank}/{step}'.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'little') & ((1 << 63) - 1)

logger = logging.getLogger(__name__)


@MODELS.register_module()
class PompPretrainer(BaseModel):
    """Learns a POMP prompt over a large vocabulary with a frozen CLIP.

    Each step embeds the images (all views) with the frozen image tower, samples the K classes
    to contrast (the batch's classes plus negatives), embeds only those K prompts, and applies
    the locally corrected cross-entropy.

    Args:
        clip_model: open_clip model name or config dict.
        pretrained: open_clip tag or local CLIP weights file.
        vocabulary: The N classes (built-in name such as ``'imagenet21k'``, list or file); the
            dataset's labels index it.
        n_ctx: Context length; ``ctx_init`` initialises it from words instead.
        class_token_position: ``'end'``, ``'middle'`` or ``'front'``.
        num_sampled: K, classes contrasted per step (``None`` or >= N: full softmax, the
            CoOp-style baseline).
        sampling: ``'uniform'``, ``'frequency'`` or ``'hard'``.
        correction: ``'ln'`` (paper), ``'log10'`` (official code) or ``'none'``. With
            ``'frequency'`` / ``'hard'`` sampling each drawn negative's margin is ``-log q_j`` of
            its own inclusion probability instead of the uniform ``log((N-1)/(K'-1))``.
        class_counts: Images per class, for ``sampling='frequency'``; None takes them from the
            training dataset when training starts (``PromptCheckpointHook``, which
            ``tools/pretrain.py`` adds: ImageNet21K, ImageList and CachedFeatures count them).
        hard_refresh_interval: Steps between refreshes of the class-embedding bank (hard mode).
        seed: Seed of the negative sampler (each distributed rank adds its own offset).
        chunk_size: Classes per text-tower call when embedding many classes.
        attention: ``'auto'`` (default), ``'varlen'``, ``'grouped'`` or ``'padded'``: how the
            sampled prompts run through the text tower (:class:`~pomp_mm.PompTextEncoder`).
        pack_lengths: Deprecated alias of ``attention`` (True: ``'grouped'``, False:
            ``'padded'``).
        compile: Run the text tower's packed blocks through ``torch.compile`` (eager steps
            are the same up to float rounding).
        mask_duplicate_names: Leave out of an image's softmax the sampled classes whose display
            name equals its own class's (ImageNet-21K lemma collisions: identical prompts, so
            the step would push the image away from its own embedding). Their count per step is
            logged as ``masked_twins``. False reproduces the official code.
        contrast: ``'shared'`` (default): every image is contrasted against the same ``K'``
            columns, the batch's classes plus negatives, so the other images' positives are
            negatives too. ``'per_image'`` (the official code): ``K - 1`` negatives are drawn
            once per step from all ``N`` classes and each image's row is ``[its own class, the
            negatives]`` with its own label rejected and the margin counted per row
            (:func:`~pomp_mm.pretrain.per_image_logits`); needs ``2 <= num_sampled <= N``.
        data_preprocessor: mmengine data preprocessor config.
    """

    def __init__(self,
                 clip_model: ClipSpec = 'ViT-B-16',
                 pretrained: Optional[str] = None,
                 vocabulary: VocabularyLike = 'imagenet21k',
                 n_ctx: Optional[int] = 16,
                 ctx_init: Optional[str] = None,
                 class_token_position: str = 'end',
                 num_sampled: Optional[int] = 1000,
                 sampling: str = 'uniform',
                 correction: str = 'ln',
                 class_counts: Optional[Sequence[int]] = None,
                 hard_refresh_interval: int = 1000,
                 hard_temperature: float = 0.07,
                 seed: int = 0,
                 chunk_size: int = 1024,
                 attention: str = 'auto',
                 pack_lengths: Optional[bool] = None,
                 compile: bool = False,
                 mask_duplicate_names: bool = True,
                 contrast: str = 'shared',
                 data_preprocessor: Optional[Union[dict, torch.nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        from mmengine.dist import get_rank
        if contrast not in CONTRASTS:
            raise ValueError(f'unknown contrast {contrast!r}; expected one of {list(CONTRASTS)}')
        vocab = parse_vocabulary(vocabulary)
        if contrast == 'per_image' and (num_sampled is None or
                                        not 2 <= num_sampled <= len(vocab)):
            raise ValueError(f"contrast='per_image' needs num_sampled (K: the positive and "
                             f'K - 1 negatives) in [2, N={len(vocab)}], got {num_sampled!r}')
        self.contrast = contrast
        clip = build_clip(clip_model, pretrained)
        self.visual = clip.visual
        self.text_encoder = PompTextEncoder(
            clip_model=clip_model, pretrained=pretrained, clip_module=clip, vocabulary=vocab,
            n_ctx=None if ctx_init else n_ctx, ctx_init=ctx_init,
            class_token_position=class_token_position, prompt_trainable=True,
            chunk_size=chunk_size, attention=resolve_attention_arg(attention, pack_lengths),
            compile=compile, cat_bg=False)
        self.vocabulary = vocab
        self.num_classes = len(vocab)
        k = self.num_classes if num_sampled is None else min(num_sampled, self.num_classes)
        self.num_sampled = k
        self.correction = correction
        self.sampling = sampling
        # frequency counts may come from the dataset at before_train (set_class_counts); until
        # then a placeholder that compute_loss refuses to sample with
        self.counts_pending = sampling == 'frequency' and class_counts is None
        if self.counts_pending:
            class_counts = [1] * self.num_classes
        self.sampler = NegativeSampler(self.num_classes, k, mode=sampling,
                                       class_counts=class_counts, seed=seed, rank=get_rank(),
                                       hard_temperature=hard_temperature,
                                       refresh_interval=hard_refresh_interval)
        self.seed, self.rank = seed, get_rank()
        # Resume state as fixed-shape buffers (mmengine broadcasts and reloads state dicts
        # tensor by tensor): the number of forward passes (it seeds each pass's negatives; with
        # gradient accumulation it is not the optimizer's step), and for hard mode the class
        # bank and the pass it was embedded at.
        self.register_load_state_dict_post_hook(self._towers_not_missing)
        self.register_buffer('forward_count', torch.zeros((), dtype=torch.long))
        self.register_buffer('bank_step', torch.full((), -1, dtype=torch.long))
        self._host_mirror: Dict[str, tuple] = {}
        bank_shape = (self.num_classes, self.text_encoder.tower.output_dim)
        self.register_buffer('class_bank', torch.zeros(bank_shape if sampling == 'hard' else 0))
        # DDP would broadcast the N x D bank from rank 0 at every forward; every rank computes
        # the same bank (same prompt, same step), so leave it and its step out of that
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            self, ['class_bank', 'bank_step'])
        self.loss_settings = {'num_sampled': k, 'sampling': sampling, 'correction': correction,
                              'num_classes': self.num_classes,
                              'mask_duplicate_names': mask_duplicate_names,
                              'contrast': contrast}
        # classes whose prompts are the same text (CLIP's tokenizer lower-cases) share a group
        groups: Dict[str, int] = {}
        name_group = [groups.setdefault(' '.join(n.lower().split()), len(groups))
                      for n in vocab.names]
        self.name_group = torch.tensor(name_group) if mask_duplicate_names and \
            len(groups) < self.num_classes else None

    # ------------------------------------------------------------------ checkpoints
    #: Frozen CLIP towers: rebuilt from the config, never saved (a ViT-B/16 is ~600 MB per
    #: checkpoint for a prompt of a few KB).
    FROZEN_PREFIXES = ('visual.', 'text_encoder.tower.')
    FINGERPRINT_KEY = 'clip_fingerprint'

    def clip_fingerprint(self) -> str:
        """Hash of the frozen image and text towers' weights (:func:`weights_fingerprint`)."""
        return weights_fingerprint(self.visual) + self.text_encoder.tower.fingerprint()

    def _matches_clip(self, saved: str) -> bool:
        if len(saved) == 32:  # written before every weight was hashed: the sampled check
            tower = self.text_encoder.tower
            return saved == (sampled_fingerprint(self.visual) +
                             sampled_fingerprint(tower, tower.transformer))
        return saved == self.clip_fingerprint()

    def state_dict(self, *args: Any, destination=None, prefix: str = '',
                   keep_vars: bool = False) -> Dict[str, Any]:
        """What training changes and resuming needs (prompt, step, hard-mode bank) and the
        CLIP weights' fingerprint; not the frozen towers."""
        state = super().state_dict(*args, destination=destination, prefix=prefix,
                                   keep_vars=keep_vars)
        for key in [k for k in state if k.startswith(tuple(prefix + p
                                                           for p in self.FROZEN_PREFIXES))]:
            del state[key]
        state[prefix + self.FINGERPRINT_KEY] = torch.frombuffer(
            bytearray(self.clip_fingerprint().encode()), dtype=torch.uint8)
        return state

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        if prefix + 'step_count' in state_dict:  # its name in checkpoints before 2026-12
            state_dict[prefix + 'forward_count'] = state_dict.pop(prefix + 'step_count')
        saved = state_dict.pop(prefix + self.FINGERPRINT_KEY, None)
        if saved is not None:
            saved = bytes(saved.to(torch.uint8).tolist()).decode(errors='replace')
            if not self._matches_clip(saved):
                raise ValueError(
                    f'this checkpoint was trained with other CLIP weights (fingerprint '
                    f'{saved}) than this run builds ({self.clip_fingerprint()}): resume with '
                    'the clip_model / pretrained it was made with')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    @staticmethod
    def _towers_not_missing(module, incompatible_keys) -> None:
        """Load post-hook: the frozen towers come from the config, not the checkpoint."""
        frozen = tuple('.' + p for p in PompPretrainer.FROZEN_PREFIXES)
        incompatible_keys.missing_keys[:] = [
            k for k in incompatible_keys.missing_keys if not any(f in '.' + k for f in frozen)]

    # ------------------------------------------------------------------ helpers
    def check_label_space(self, classes: Optional[Sequence[str]]) -> None:
        """Checks that a dataset's labels mean the same classes as this model's vocabulary.

        Dataset labels index the dataset's own class list (``metainfo['classes']``) while the
        loss reads them as indices into :attr:`vocabulary`; any difference silently trains
        every image against the wrong class.

        Args:
            classes: The dataset's class names in label order; ``None`` (a dataset without
                ``metainfo['classes']``) cannot be checked and only logs a warning.

        Raises:
            ValueError: The lists differ; names the first differing index and both names.
        """
        if classes is None:
            logger.warning('the training dataset has no metainfo["classes"]: its labels cannot '
                           'be checked against the model vocabulary (%s, %d classes)',
                           self.vocabulary.source, self.num_classes)
            return
        names, classes = list(self.vocabulary.names), list(classes)
        i = first_difference(names, classes)
        if i is None:
            return
        if i < min(len(names), len(classes)):
            raise ValueError(
                f'dataset label {i} is {classes[i]!r} but model vocabulary class {i} is '
                f'{names[i]!r}: labels index the dataset\'s class list, so it must equal the '
                f'model vocabulary ({self.vocabulary.source}) in the same order; e.g. pass '
                f'the same vocabulary to the dataset')
        extra = (f'dataset label {i} is {classes[i]!r} but the model vocabulary ends at '
                 f'{len(names)} classes' if len(classes) > len(names) else
                 f'model vocabulary class {i} is {names[i]!r} but the dataset has only '
                 f'{len(classes)} classes')
        raise ValueError(f'{extra}: the dataset\'s class list must equal the model vocabulary '
                         f'({self.vocabulary.source}, {len(names)} classes)')

    def set_class_counts(self, class_counts: Sequence[int]) -> None:
        """Per-class image counts for ``sampling='frequency'`` (e.g. the dataset's)."""
        self.sampler.set_class_counts(class_counts)
        self.counts_pending = False

    @property
    def prompt_learner(self):
        return self.text_encoder.prompt_learner

    def train(self, mode: bool = True) -> 'PompPretrainer':
        super().train(mode)
        self.visual.eval()  # frozen towers: no dropout / batch-norm updates
        self.text_encoder.tower.eval()
        return self

    def init_weights(self) -> None:
        """Nothing to draw: CLIP is loaded and the prompt initialised at construction."""
        self._is_init = True

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features of ``[..., 3, H, W]`` images, flattened to [M, D]."""
        return image_features(self.visual, images)

    @property
    def _step(self) -> int:
        return self._host_value('forward_count')

    def _host_value(self, name: str) -> int:
        """A scalar buffer's value, read from the device only when something other than this
        model changed it (a checkpoint load, a test): a step seeds its draws from it, and a
        read from a GPU would stall the host every step."""
        buf = getattr(self, name)
        key = (buf._version, buf.data_ptr(), buf.device)
        hit = self._host_mirror.get(name)
        if hit is None or hit[0] != key:
            hit = (key, int(buf))
            self._host_mirror[name] = hit
        return hit[1]

    def _bump_step(self) -> None:
        step = self._step + 1
        self.forward_count += 1
        buf = self.forward_count
        self._host_mirror['forward_count'] = ((buf._version, buf.data_ptr(), buf.device), step)

    @torch.no_grad()
    def refresh_bank(self) -> None:
        """Embed all N classes with the current prompt (hard negative mining bank)."""
        bank = self.text_encoder.encode_names(self.vocabulary.names, progress=None)
        self.sampler.update_bank(bank, step=self._step)
        self.class_bank.copy_(self.sampler.bank)
        self.bank_step.fill_(self._step)

    def _sync_bank(self) -> None:
        """After a resume the bank lives in the buffers only: hand it back to the sampler."""
        step = self._host_value('bank_step')
        if step >= 0 and self.sampler.last_refresh_step != step:
            self.sampler.update_bank(self.class_bank, step=step)

    def compute_loss(self, features: torch.Tensor, labels: torch.Tensor,
                     num_views: int) -> Dict[str, torch.Tensor]:
        """POMP loss for image features [B * num_views, D] of images with ``labels`` [B]."""
        if self.counts_pending:
            raise RuntimeError("sampling='frequency' has no class_counts: set model.class_counts "
                               'or train through tools/pretrain.py (its PromptCheckpointHook '
                               'takes them from the training dataset)')
        if self.sampling == 'hard':
            self._sync_bank()
            if self.sampler.needs_refresh(self._step):
                self.refresh_bank()
        # Negatives are a function of (seed, rank, step): ranks differ, and a resumed run
        # (every rank reads rank 0's checkpoint) draws exactly what it would have drawn.
        self.sampler.generator.manual_seed(_step_seed(self.seed, self.rank, self._step))
        if self.contrast == 'per_image':
            return self._per_image_loss(features, labels.cpu(), num_views)
        class_ids, targets, probs = self.sampler.sample(labels.cpu(), return_probs=True)
        self.last_class_ids = class_ids  # inspected by tests and debugging hooks
        # uniform draws: the closed-form Eq. 5 margin (bit-identical to earlier runs); otherwise
        # each negative's own -log q_j
        probs = None if self.sampling == 'uniform' else probs
        text = self.text_encoder.encode_classes(class_ids)
        logits = local_contrast_logits(features, text, self.text_encoder.tower.logit_scale.exp())
        ignore, twins = None, 0
        if self.name_group is not None:
            col, row = self.name_group[class_ids], self.name_group[labels.cpu()]
            ignore = (row[:, None] == col[None, :]) & (labels.cpu()[:, None] != class_ids[None, :])
            twins = int(ignore.sum())
            ignore = _to(ignore.repeat_interleave(num_views, 0), features.device) \
                if twins else None
        targets = _to(targets.repeat_interleave(num_views), features.device)
        loss = pomp_loss(logits, targets, self.num_classes, self.correction, probs, ignore)
        with torch.no_grad():
            shown = logits if ignore is None else logits.masked_fill(ignore, float('-inf'))
            acc = (shown.argmax(-1) == targets).float().mean()
        self._bump_step()
        return {'loss': loss, 'acc_local': acc,
                'num_contrasted': torch.tensor(float(len(class_ids))),
                'masked_twins': torch.tensor(float(twins))}

    def _per_image_loss(self, features: torch.Tensor, labels: torch.Tensor,
                        num_views: int) -> Dict[str, torch.Tensor]:
        """The official step: one draw of K - 1 negatives, a ``[1 + M]`` row per image."""
        negatives, probs = self.sampler.sample_shared_negatives(
            labels, self.num_sampled - 1, return_probs=True)
        # the text tower runs once over the union of positives and negatives
        class_ids = torch.unique(torch.cat([labels, negatives]))
        self.last_class_ids, self.last_negatives = class_ids, negatives
        text = self.text_encoder.encode_classes(class_ids)
        row_of = torch.full((self.num_classes,), -1, dtype=torch.long)
        row_of[class_ids] = torch.arange(class_ids.numel())
        rows = labels.repeat_interleave(num_views)
        ignore, twins = None, 0
        if self.name_group is not None:
            ignore = (self.name_group[labels][:, None] == self.name_group[negatives][None, :]) \
                & (labels[:, None] != negatives[None, :])
            twins = int(ignore.sum())
            ignore = _to(ignore.repeat_interleave(num_views, 0), features.device)
        device = features.device
        logits = per_image_logits(
            features, text[_to(row_of[rows], device)], text[_to(row_of[negatives], device)],
            _to(rows, device), _to(negatives, device), self.text_encoder.tower.logit_scale.exp(),
            self.num_classes, self.correction, probs, ignore)
        targets = torch.zeros(logits.shape[0], dtype=torch.long, device=device)
        loss = F.cross_entropy(logits, targets)
        with torch.no_grad():  # rejected columns sit at -1e6: they cannot win the argmax
            acc = (logits.argmax(-1) == 0).float().mean()
        self._bump_step()
        return {'loss': loss, 'acc_local': acc,
                'num_contrasted': torch.tensor(float(1 + negatives.numel())),
                'masked_twins': torch.tensor(float(twins))}

    # ------------------------------------------------------------------ mmengine API
    def forward(self, inputs: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, indices: Any = None,
                skipped: Union[int, torch.Tensor] = 0, features: Optional[torch.Tensor] = None,
                mode: str = 'loss') -> Union[Dict[str, torch.Tensor], torch.Tensor]:
        """``mode='loss'``: the loss dict (``skipped`` counts unreadable images of the batch);
        ``mode='tensor'``: image features. ``features`` [B, V, D] replaces ``inputs`` when
        training from an image-feature cache."""
        skipped_t = torch.as_tensor(float(skipped))
        if mode == 'tensor':
            return self.encode_images(inputs)
        if mode != 'loss':
            raise ValueError(f"PompPretrainer supports mode 'loss' and 'tensor', got {mode!r}")
        if labels is None or (inputs is None and features is None):
            # every image of the batch was unreadable: a zero loss that still touches ctx
            zero = self.prompt_learner.ctx.sum() * 0.0
            return {'loss': zero, 'skipped_images': skipped_t}
        if features is not None:
            num_views = features.shape[1] if features.dim() == 3 else 1
            feats = F.normalize(features.reshape(-1, features.shape[-1]).float(), dim=-1)
        else:
            num_views = inputs.shape[1] if inputs.dim() == 5 else 1
            feats = self.encode_images(inputs)
        out = self.compute_loss(feats, labels, num_views)
        out['skipped_images'] = skipped_t
        return out

    def prompt_metadata(self) -> Dict[str, Any]:
        """What :func:`pomp_mm.save_prompt` records about this run."""
        enc = self.text_encoder
        return {'clip_model': enc.model_id,
                'class_token_position': enc.prompt_learner.class_token_position,
                'ctx_init': enc.prompt_meta.get('ctx_init'),
                'train_vocabulary': self.vocabulary.source,
                'train_vocabulary_size': self.num_classes, 'loss': dict(self.loss_settings),
                'steps': self._step}

