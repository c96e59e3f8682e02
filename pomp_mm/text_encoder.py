"""The POMP prompt text encoder: class names -> L2-normalised CLIP text embeddings.

:class:`PompTextEncoder` is registered in mmengine's root ``MODELS`` registry (found from
mmdet's and mmseg's registries too). Its ``forward()`` honours the contract of mmseg's
``CLIPTextEncoder``, so it can take that module's place in ``MultimodalEncoderDecoder``.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import nn

from .clip import ClipSpec, build_clip, clip_model_id
from .embedding_cache import EmbeddingCache, TableMemo
from .prompt_checkpoint import PromptCheckpoint, load_prompt
from .prompt_learner import PromptBatch, PromptLearner
from .templates import TemplateSpec, get_templates
from .token_table import TokenTable
from .towers import TextTower, build_text_tower
from .varlen import ATTENTION_MODES
from .vocabulary import Vocabulary, VocabularyLike, load_vocabulary, parse_vocabulary

__all__ = ['PompTextEncoder', 'get_templates']

logger = logging.getLogger(__name__)

def resolve_attention_arg(attention: str, pack_lengths: Optional[bool]) -> str:
    """``attention``, or what the deprecated ``pack_lengths`` asked for when it is given."""
    if attention not in ATTENTION_MODES:
        raise ValueError(f'unknown attention {attention!r}; expected one of '
                         f'{list(ATTENTION_MODES)}')
    if pack_lengths is None:
        return attention
    mode = 'grouped' if pack_lengths else 'padded'
    warnings.warn(f"pack_lengths={pack_lengths} is deprecated: use attention='{mode}' (or "
                  "'varlen', the default's one attention call per layer)", DeprecationWarning,
                  stacklevel=3)
    if attention not in ('auto', mode):
        raise ValueError(f'pack_lengths={pack_lengths} asks for attention={mode!r} but '
                         f'attention={attention!r} was given; drop pack_lengths')
    return mode


def _with_position(ckpt: PromptCheckpoint, position: Optional[str]) -> PromptCheckpoint:
    """``ckpt`` with the class-token position asked for, where the file cannot know it."""
    if position is None or position == ckpt.class_token_position:
        return ckpt
    if ckpt.meta.get('source_format') != 'official':
        raise ValueError(f'prompt {ckpt.path!r} was learned with class_token_position='
                         f'{ckpt.class_token_position!r}, not {position!r}')
    return PromptCheckpoint(ckpt.ctx, dict(ckpt.meta, class_token_position=position,
                                           class_token_position_from='argument'), ckpt.path)


@MODELS.register_module()
class PompTextEncoder(BaseModule):
    """Frozen CLIP text tower with a (POMP) learned prompt, or hand templates as a baseline.

    Args:
        clip_model: An open_clip model name (``'ViT-B-16'``), an open_clip config dict, or
            ``'transformers:<hub id or folder>'`` (a Hugging Face ``CLIPModel`` and its
            tokenizer; :mod:`pomp_mm.towers.hf_clip`).
        pretrained: An open_clip pretrained tag or a local CLIP state-dict path; None keeps
            random weights (tests only).
        prompt: A prompt checkpoint (pomp_mm format, or official POMP / CoOp ``.pth.tar``).
            None with neither ``n_ctx`` nor ``ctx_init`` uses ``templates`` (the baseline).
        n_ctx: Context length of a new prompt (random N(0, 0.02) init) when ``prompt`` is None.
        ctx_init: Words whose token embeddings initialise a new prompt (e.g.
            ``'a photo of a'``); sets ``n_ctx`` to their token count.
        class_token_position: ``'end'``, ``'middle'`` or ``'front'``; for a new prompt
            ``'end'`` by default. A pomp_mm checkpoint brings its own (a different value is an
            error); for an official (Dassl) checkpoint, which does not record it, this sets it
            (default: the ``ctp<position>`` of its file name, else ``'end'``).
        class_specific: A new prompt has one context per class of ``vocabulary``.
        vocabulary: Class names (list, ``' . '``-string, file or built-in name).
        dataset_name: A built-in vocabulary name; exactly one of ``vocabulary`` and
            ``dataset_name`` must be given.
        templates: Templates for the baseline (no prompt); see :func:`get_templates`.
            ``'vild'`` by default, as mmseg's ``CLIPTextEncoder``.
        cat_bg: Append a learned background embedding row in ``forward()`` (default True, as
            mmseg's ``CLIPTextEncoder``: SAN reads its last row as "no object"). Set False
            where only :meth:`encode_text` is used (detection, classification).
        prompt_trainable: Let gradients reach the prompt (fine-tuning); frozen by default.
        cache_feature: Keep ``forward()``'s table in memory while the prompt is unchanged.
        cache_dir: Folder of an on-disk embedding cache for ``encode_text``; None disables it.
        chunk_size: Classes encoded per text-tower call, bounding memory.
        truncate: Run the causal transformer only up to the last EOT token of each chunk.
        share_prefix: Run the ``[SOS, ctx]`` positions every prompt starts with once per chunk
            instead of once per class (shared context, class name at the end; same result).
        attention: How a chunk's prompts run through the tower (same result, different
            kernels; :mod:`pomp_mm.varlen`): ``'varlen'`` packs every prompt's own tokens and
            runs one attention call per layer (flash's varlen kernel on CUDA in half
            precision); ``'grouped'`` packs them and runs one attention call per prompt
            length; ``'padded'`` pads them to the chunk's longest; ``'auto'`` (default) is
            ``'varlen'`` on CUDA and ``'grouped'`` on the CPU, the fastest measured on each
            (docs/benchmarks.md).
        pack_lengths: Deprecated alias: True is ``attention='grouped'``, False ``'padded'``.
        compile: Run the packed (``'varlen'``) blocks through ``torch.compile``.
        clip_module: The open_clip model ``clip_model`` / ``pretrained`` describe, when the
            caller has already built it (pre-training needs its image tower too).
        init_cfg: mmengine initialisation config.
    """

    def __init__(self,
                 clip_model: ClipSpec = 'ViT-B-16',
                 pretrained: Optional[str] = None,
                 prompt: Optional[str] = None,
                 n_ctx: Optional[int] = None,
                 ctx_init: Optional[str] = None,
                 class_token_position: Optional[str] = None,
                 class_specific: bool = False,
                 vocabulary: Optional[VocabularyLike] = None,
                 dataset_name: Optional[str] = None,
                 templates: TemplateSpec = 'vild',
                 cat_bg: bool = True,
                 prompt_trainable: bool = False,
                 cache_feature: bool = True,
                 cache_dir: Optional[str] = None,
                 chunk_size: int = 1024,
                 truncate: bool = True,
                 share_prefix: bool = True,
                 attention: str = 'auto',
                 pack_lengths: Optional[bool] = None,
                 compile: bool = False,
                 clip_module: Optional[nn.Module] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg)
        if (vocabulary is None) == (dataset_name is None):
            raise ValueError('give exactly one of vocabulary and dataset_name (got '
                             f'vocabulary={vocabulary!r}, dataset_name={dataset_name!r})')
        if chunk_size < 1:
            raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
        self.vocabulary: Vocabulary = (load_vocabulary(dataset_name) if dataset_name is not None
                                       else parse_vocabulary(vocabulary))
        self.dataset_name = dataset_name
        self.clip_model_spec = clip_model
        self.model_id = clip_model_id(clip_model, pretrained)
        self.tower: TextTower = build_text_tower(
            clip_module if clip_module is not None else build_clip(clip_model, pretrained),
            clip_model)
        #: prompts start with the tokenizer's start token (CLIP), or with the context (SigLIP)
        self._start_token = self.tokenizer.sot_token_id is not None
        # 'vild' (the default) needs mmseg: resolved on first use, so prompts never need it
        self._template_spec = templates
        self._templates = None if templates == 'vild' else get_templates(templates)
        self.chunk_size = chunk_size
        self.truncate = truncate
        self.share_prefix = share_prefix
        self.attention = resolve_attention_arg(attention, pack_lengths)
        if not self.tower.causal:
            self._whole_prompts()
        if compile and self.tower.shares_prefix:
            self.tower.compile_packed()
        elif compile:
            logger.info('compile=True ignored: the %s text tower of %s has no packed path',
                        self.tower.family, self.model_id)
        self._table: Optional[TokenTable] = None
        self.cache_feature = cache_feature
        self.disk_cache = EmbeddingCache(cache_dir) if cache_dir else None
        self._memo = TableMemo()

        self.prompt_source: Optional[str] = prompt
        self.prompt_meta: Dict[str, Any] = {}
        self.prompt_learner: Optional[PromptLearner] = None
        if prompt is not None:
            if n_ctx is not None or ctx_init is not None:
                raise ValueError(f'prompt={prompt!r} brings its own context; do not also set '
                                 f'n_ctx ({n_ctx}) or ctx_init ({ctx_init!r})')
            self.set_prompt(_with_position(load_prompt(prompt), class_token_position))
        elif n_ctx is not None or ctx_init is not None:
            class_token_position = class_token_position or 'end'
            init = self._embed_words(ctx_init) if ctx_init else None
            if init is not None and n_ctx is not None and n_ctx != init.shape[0]:
                raise ValueError(f'ctx_init {ctx_init!r} has {init.shape[0]} tokens but '
                                 f'n_ctx={n_ctx}')
            self.prompt_learner = PromptLearner(
                init.shape[0] if init is not None else n_ctx, self.tower.width, init,
                class_token_position, list(self.vocabulary.names) if class_specific else None,
                start_token=self._start_token)
            self.prompt_meta = {'class_token_position': class_token_position,
                                'ctx_init': ctx_init}
            if not prompt_trainable and init is None:
                # word-initialised context is the hand prompt; random context means nothing
                logger.warning('PompTextEncoder built a random, untrained prompt (n_ctx=%s) '
                               'with prompt_trainable=False', n_ctx)
        self.set_prompt_trainable(prompt_trainable)

        self.cat_bg = cat_bg
        if cat_bg:
            self.bg_embed = nn.Parameter(torch.randn(1, self.tower.output_dim)
                                         * self.tower.output_dim**-0.5)

    def _whole_prompts(self) -> None:
        """A bidirectional tower (SigLIP): every position depends on every other, the class
        name included, so prompts run whole: no shared prefix, no truncation, no packing."""
        why = (f'the text tower of {self.model_id} is bidirectional (no causal mask, pooled '
               'at the last position): every position depends on the class name')
        if self.share_prefix:
            logger.info('share_prefix switched off: %s', why)
            self.share_prefix = False
        if self.truncate:
            logger.info('truncate switched off: %s, so prompts run at the full context '
                        'length %d', why, self.tower.context_length)
            self.truncate = False
        if self.attention in ('varlen', 'grouped'):
            logger.info('attention=%r runs as padded: %s', self.attention, why)

    @property
    def tokenizer(self) -> Any:
        """The text tower family's tokenizer."""
        return self.tower.tokenizer

    @property
    def templates(self) -> List[str]:
        """The hand-prompt templates (used when there is no prompt)."""
        if self._templates is None:
            self._templates = get_templates(self._template_spec)
        return self._templates

    # ---------------------------------------------------------------- prompt management
    def _embed_words(self, words: str) -> torch.Tensor:
        ids = self.tokenizer.encode(words.replace('_', ' '))
        if not ids:
            raise ValueError(f'ctx_init {words!r} has no tokens')
        with torch.no_grad():
            return self.tower.token_embedding(torch.tensor(ids, device=self.tower.device)).float()

    def set_prompt(self, ckpt: PromptCheckpoint) -> None:
        """Use a loaded prompt checkpoint (checks that its width fits the text tower)."""
        if ckpt.width != self.tower.width:
            raise ValueError(
                f'prompt {ckpt.path or "(in memory)"} has width {ckpt.width} but the text tower '
                f'of {self.model_id} has width {self.tower.width}; it was learned for another '
                f'CLIP model ({ckpt.meta.get("clip_model", "unknown")})')
        csc = ckpt.meta.get('csc_names')
        if ckpt.ctx.dim() == 3 and csc is None:
            csc = list(self.vocabulary.names)
            if len(csc) != ckpt.ctx.shape[0]:
                raise ValueError(f'class-specific prompt {ckpt.path} has {ckpt.ctx.shape[0]} '
                                 f'contexts but the vocabulary has {len(csc)} classes')
        learner = PromptLearner(ckpt.n_ctx, ckpt.width, None, ckpt.class_token_position, csc,
                                start_token=self._start_token)
        with torch.no_grad():
            learner.ctx.copy_(ckpt.ctx)
        learner.ctx.requires_grad_(getattr(self, 'prompt_trainable', False))
        device = self.tower.device
        self.prompt_learner = learner.to(device)
        self.prompt_source = ckpt.path
        self.prompt_meta = dict(ckpt.meta)
        self._memo.clear()

    def set_prompt_trainable(self, trainable: bool) -> None:
        self.prompt_trainable = trainable
        if self.prompt_learner is not None:
            self.prompt_learner.ctx.requires_grad_(trainable)

    def set_vocabulary(self, vocabulary: VocabularyLike) -> None:
        """Switch the vocabulary ``forward()`` embeds (e.g. train vs test classes)."""
        self.vocabulary = parse_vocabulary(vocabulary)
        self.dataset_name = None

    def prompt_fingerprint(self) -> str:
        if self.prompt_learner is None:
            return 'templates:' + '|'.join(self.templates)
        ckpt = PromptCheckpoint(self.prompt_learner.ctx, {
            'class_token_position': self.prompt_learner.class_token_position,
            'csc_names': self.prompt_learner.csc_names})
        return ckpt.fingerprint()

    # ---------------------------------------------------------------- encoding
    def _chunks(self, lengths: torch.Tensor, progress: Optional[bool], desc: str):
        """Index chunks of classes sorted by prompt length, so truncation cuts the most
        (packed, as given: lengths cost nothing there)."""
        packed = self.prompt_learner is not None and self.attention_mode() == 'varlen'
        order = torch.arange(len(lengths)) if packed and len(lengths) <= self.chunk_size \
            else torch.argsort(lengths, stable=True)
        chunks = list(torch.split(order, self.chunk_size))
        show = len(chunks) > 1 if progress is None else progress
        if show:
            from tqdm import tqdm
            return tqdm(chunks, desc=desc, unit='chunk')
        return chunks

    def attention_mode(self) -> str:
        """The attention path ``'auto'`` resolves to on the tower's device: ``'varlen'`` on
        CUDA (launch-bound), ``'grouped'`` elsewhere (the fastest on the CPU, where launches
        are cheap and the padded single call costs more arithmetic; docs/benchmarks.md)."""
        if self.attention != 'auto':
            return self.attention
        return 'varlen' if self.tower.device.type == 'cuda' else 'grouped'

    def _encode_prompts(self, names: Sequence[str], progress: Optional[bool]) -> torch.Tensor:
        learner = self.prompt_learner
        assert learner is not None
        batch = learner.tokenize(names, self.tokenizer, self.tower.context_length)
        return self._encode_batch(batch, learner.class_indices(names), progress)

    def _encode_batch(self, batch: PromptBatch, class_index: Optional[torch.Tensor],
                      progress: Optional[bool], chunked: bool = True) -> torch.Tensor:
        """Embeddings of tokenized prompts (``batch.eot`` on the host), chunk by chunk
        (``chunked=False``: all in one call)."""
        device = self.tower.device
        if not chunked:  # one call in batch order: no index juggling (nor copies to wait for)
            return F.normalize(self._encode_chunk(batch, class_index).float(), dim=-1)
        grad = torch.is_grad_enabled()
        out = None if grad else torch.empty(len(batch), self.tower.output_dim, device=device)
        rows = []
        for idx in self._chunks(batch.eot, progress, 'encoding prompts'):
            on = idx.to(batch.tokens.device, non_blocking=True)
            sub = PromptBatch(batch.tokens[on],
                              batch.name_lens[idx.to(batch.name_lens.device, non_blocking=True)],
                              batch.eot[idx])
            csc = None if class_index is None else \
                class_index[idx.to(class_index.device, non_blocking=True)]
            feats = F.normalize(self._encode_chunk(sub, csc).float(), dim=-1)
            if grad:
                rows.append((idx, feats))
            else:
                out[idx.to(device, non_blocking=True)] = feats
        if rows:  # keep the autograd graph: no in-place writes
            index = torch.cat([i for i, _ in rows]).to(device, non_blocking=True)
            out = torch.cat([f for _, f in rows])[torch.argsort(index)]
        return out

    def _encode_chunk(self, sub: PromptBatch,
                      class_index: Optional[torch.Tensor]) -> torch.Tensor:
        """Unnormalised features of one chunk of prompts: the learner lays them out for the
        attention mode, the tower encodes them."""
        tower = self.tower
        mode = self.attention_mode()
        packed = mode == 'varlen' and tower.shares_prefix
        prompts = self.prompt_learner.embed(
            sub, tower.embed_tokens, class_index, truncate=self.truncate,
            share_prefix=self.share_prefix and tower.shares_prefix, packed=packed,
            flash=packed and tower.runs_flash())
        return tower.encode(prompts, grouped=self.truncate and mode == 'grouped')

    def _encode_templates(self, names: Sequence[str], progress: Optional[bool]) -> torch.Tensor:
        ctx_len = self.tower.context_length
        device = self.tower.device
        total = None
        extra = getattr(self.tokenizer, 'num_special', 2)  # SOS and EOT; SigLIP: EOS
        for template in self.templates:
            texts = [template.format(n) for n in names]
            tokens = self.tokenizer(texts)
            last = self.tower.eot_index(tokens)
            # the tokenizer cuts a text that does not fit, ending it in the last slot: only
            # those rows are counted again, so every other text is tokenized once
            for i in torch.nonzero(last == ctx_len - 1).flatten().tolist():
                count = len(self.tokenizer.encode(texts[i])) + extra
                if count > ctx_len:
                    raise ValueError(f'the prompt of class {names[i]!r} ({template!r}) has '
                                     f'{count} tokens, more than the context length {ctx_len}')
            tokens = tokens.to(device)
            lengths = last + 1
            feats = torch.empty(len(names), self.tower.output_dim, device=device)
            for idx in self._chunks(lengths, progress, f'encoding {template!r}'):
                feats[idx.to(device)] = self.tower.encode_tokens(
                    tokens[idx.to(device)], truncate=self.truncate).float()
            total = feats if total is None else total + feats
        return F.normalize(total, dim=-1)

    def encode_text(self, names: VocabularyLike, progress: Optional[bool] = None) -> torch.Tensor:
        """Embed class names.

        Args:
            names: Class names (or anything :func:`parse_vocabulary` accepts).
            progress: Show a progress bar; by default only when there are several chunks.

        Returns:
            L2-normalised embeddings [len(names), D] (float32, on the text tower's device).
        """
        return self.encode_names(parse_vocabulary(names).names, progress)

    def encode_names(self, names: Sequence[str], progress: Optional[bool] = False) -> torch.Tensor:
        """:meth:`encode_text` for names used exactly as given (no cleaning, no duplicate
        warnings): the per-step path of pre-training."""
        names = list(names)
        if not names:
            raise ValueError('no class names to encode')
        grad = torch.is_grad_enabled() and self.prompt_learner is not None and \
            self.prompt_learner.ctx.requires_grad
        key = None
        if self.disk_cache is not None and not grad:
            key = self._cache_key(names)
            hit = self.disk_cache.get(key, names)
            if hit is not None:
                return hit.to(self.tower.device)
        # A table that can outlive this call (no grad: memo or disk cache) is computed at the
        # tower's precision, not at whatever autocast its first caller ran under.
        precision = contextlib.nullcontext() if grad else torch.autocast(
            self.tower.device.type, enabled=False)
        with torch.set_grad_enabled(grad), precision:
            if self.prompt_learner is None:
                emb = self._encode_templates(names, progress)
            else:
                emb = self._encode_prompts(names, progress)
        if key is not None:
            self.disk_cache.put(key, names, emb, {'model': self.model_id,
                                                  'prompt': self.prompt_source})
        return emb

    def encode_classes(self, class_ids: torch.Tensor) -> torch.Tensor:
        """Embed vocabulary classes by index (the per-step path of pre-training).

        The vocabulary's prompts are tokenized once into a :class:`~pomp_mm.token_table.TokenTable`
        on the tower's device; a call gathers its classes' rows by index (no strings, no
        per-class Python work). Without a prompt, falls back to :meth:`encode_names`.

        Args:
            class_ids: Vocabulary indices [K] (a host tensor avoids a device sync).

        Returns:
            L2-normalised embeddings [K, D] (float32), with gradients to the prompt when it is
            trainable and grad is enabled (then in one chunk, whatever ``chunk_size``).
        """
        learner = self.prompt_learner
        if learner is None:
            names = self.vocabulary.names
            return self.encode_names([names[i] for i in class_ids.tolist()])
        table = self.token_table()
        ids = class_ids.to('cpu')
        grad = torch.is_grad_enabled() and learner.ctx.requires_grad
        precision = contextlib.nullcontext() if grad else torch.autocast(
            self.tower.device.type, enabled=False)
        with torch.set_grad_enabled(grad), precision:
            # a training step's classes run as one chunk: K bounds its memory, and a split
            # would double its kernel launches
            return self._encode_batch(table.select(ids), table.csc_index(ids), progress=False,
                                      chunked=not grad)

    def token_table(self) -> TokenTable:
        """The vocabulary's :class:`~pomp_mm.token_table.TokenTable` (built on first use and
        again after the vocabulary, the prompt or the device changes)."""
        device = self.tower.device
        args = (self.prompt_learner, self.vocabulary.names, self.tower.context_length, device)
        if self._table is None or not self._table.serves(*args):
            self._table = TokenTable(args[0], args[1], self.tokenizer, args[2], device)
        return self._table

    def _cache_key(self, names: Sequence[str]) -> str:
        return EmbeddingCache.key(names, model=self.model_id, weights=self.tower.fingerprint(),
                                  prompt=self.prompt_fingerprint())

    def cache_file(self, names: Sequence[str]) -> Optional[str]:
        """The disk-cache file that holds (or will hold) the embeddings of ``names`` as given,
        or None without a ``cache_dir``."""
        if self.disk_cache is None:
            return None
        return self.disk_cache.path(self._cache_key(list(names)))

    def class_embeddings(self) -> torch.Tensor:
        """Normalised embeddings of the configured vocabulary [C, D] (cached when unchanged)."""
        learner = self.prompt_learner
        if (learner is not None and learner.ctx.requires_grad and torch.is_grad_enabled()) \
                or not self.cache_feature:
            return self.encode_text(self.vocabulary)
        device = self.tower.device
        hit = self._memo.get(self.vocabulary, learner, device)
        if hit is None:
            hit = self._memo.put(self.vocabulary, learner, device,
                                 self.encode_text(self.vocabulary))
        return hit

    def forward(self) -> torch.Tensor:
        """Class embeddings of the vocabulary for mmseg's ``MultimodalEncoderDecoder``.

        Returns:
            ``logit_scale.exp() *`` L2-normalised embeddings [C (+1 with ``cat_bg``), D].
        """
        emb = self.class_embeddings()
        if self.cat_bg:
            emb = F.normalize(torch.cat([emb, self.bg_embed.to(emb.dtype)]), dim=-1)
        # in the tower's dtype, as mmseg's encoder: a model.half() head gets half embeddings
        return (self.tower.logit_scale.exp() * emb).to(self.tower.logit_scale.dtype)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        # New tower weights or prompt: forget tables computed from the old.
        self._memo.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def init_weights(self) -> None:
        """Initialise the background row only: CLIP weights and prompts are loaded, not drawn."""
        if self.cat_bg:
            nn.init.normal_(self.bg_embed, std=self.bg_embed.shape[1]**-0.5)
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        # mmseg's MultimodalEncoderDecoder hands its `pretrained` to every part as mmseg's own
        # 'Pretrained_Part' (unknown to mmengine); this encoder loaded its weights when built.
        cfgs = [c for c in cfgs if c and c.get('type') != 'Pretrained_Part']
        if cfgs:  # e.g. a 'Pretrained' init_cfg restoring this whole module
            self.init_cfg = cfgs
            super().init_weights()
        self._is_init = True

    def train(self, mode: bool = True) -> 'PompTextEncoder':
        super().train(mode)
        self.tower.eval()  # frozen: no dropout, whatever the runner asks
        return self

    @property
    def num_classes(self) -> int:
        return len(self.vocabulary)

    def extra_repr(self) -> str:
        prompt = (f'prompt={self.prompt_source!r}' if self.prompt_learner is not None
                  else f'templates={len(self.templates)}')
        return f'model={self.model_id!r}, classes={len(self.vocabulary)}, {prompt}'
