"""The world's small CLIPs: their open_clip configs, the committed weights and how they were made.

``pomp-world-CNN-T`` (world v3, the default: a VGG-style CNN image tower at 64 px, trained on
attribute labels first and then locked under a contrastive stage on captions v3; causal BPE text
tower 4 x 64, context 32) and ``pomp-world-ViT-T-8`` (world v2: ViT 64 px / patch 8; the
segmentation and detection heads of the world need a ViT) are open_clip model names once the
world is imported (it is a pomp_mm plugin), so every pomp_mm tool takes ``--clip-model <name>
--pretrained <weights>``. Both were trained by :func:`train_world_clip` (``python
tools/synthetic/world.py train-clip``, the command is on each card) on rendered images of the
pre-training classes; the held-out compositions never appear in their training pairs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from .captions import GRAMMARS, caption, draw_domain
from .protocol import pretrain_classes
from .render import check_seed, object_rng, render_object
from .world import ATTRIBUTES, WorldClass

__all__ = ['MODEL_NAME', 'VIT_MODEL_NAME', 'VIT_WEIGHTS_PATH', 'VIT_CARD_PATH', 'WORLD_MODELS',
           'asset_path', 'CONFIG_PATH', 'WEIGHTS_PATH', 'CARD_PATH', 'register_world_model',
           'world_clip_weights', 'load_world_clip', 'train_world_clip', 'sha256_file',
           'read_card', 'images_to_tensor', 'hand_prompt_accuracy', 'write_card',
           'CARD_SETS', 'PROBE_PHRASES', 'PROBE_SEED', 'PROBE_THRESHOLD', 'probe_images',
           'attribute_probes', 'attribute_probes_by_half', 'check_probes']

#: The world's CLIPs: v1/v2 (a ViT; seg and det in the world run on it), v3 (a CNN) and v4
#: (v3's image trunk, its text side trained on the long-tailed caption stream v4).
WORLD_MODELS = ('pomp-world-ViT-T-8', 'pomp-world-CNN-T', 'pomp-world-CNN-T-v4')
MODEL_NAME = 'pomp-world-CNN-T'
_ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets')


def asset_path(model_name: str, suffix: str) -> str:
    """``assets/<model_name><suffix>`` of a world model (``.json``, ``.pt``, ``.card.json``)."""
    if model_name not in WORLD_MODELS:
        raise ValueError(f'unknown world CLIP {model_name!r}; choose from {WORLD_MODELS}')
    return os.path.join(_ASSETS, model_name + suffix)


#: The ViT world CLIP (v2): segmentation and detection in the world need a ViT.
VIT_MODEL_NAME = 'pomp-world-ViT-T-8'
VIT_WEIGHTS_PATH = asset_path(VIT_MODEL_NAME, '.pt')
VIT_CARD_PATH = asset_path(VIT_MODEL_NAME, '.card.json')
CONFIG_PATH = asset_path(MODEL_NAME, '.json')
WEIGHTS_PATH = asset_path(MODEL_NAME, '.pt')
#: sha256, the command that made the weights, training settings and recorded accuracies
CARD_PATH = asset_path(MODEL_NAME, '.card.json')
_CAPTION_STREAM = 11
_BATCH_STREAM = 12
_MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1)
_STD = torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)


def register_world_model(model_name: str = MODEL_NAME) -> None:
    """Make a world CLIP an open_clip model name (idempotent; done when the world is
    imported)."""
    from ..clip import register_model_config
    from .world_cnn import register_trunk
    register_trunk()
    register_model_config(asset_path(model_name, '.json'))


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def read_card(path: str = CARD_PATH) -> Dict[str, Any]:
    """The model card of the committed weights."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'world CLIP card not found: {path!r} (rebuild with '
                                f'python tools/synthetic/world.py train-clip)')
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def world_clip_weights(path: str = WEIGHTS_PATH, card: str = CARD_PATH) -> str:
    """``path`` after checking it against the sha256 its card records.

    Raises:
        FileNotFoundError: The weights or the card are missing.
        ValueError: The file's sha256 is not the recorded one (corrupted or replaced).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'world CLIP weights not found: {path!r} (rebuild with '
                                f'python tools/synthetic/world.py train-clip)')
    want = read_card(card)['sha256']
    got = sha256_file(path)
    if got != want:
        raise ValueError(f'world CLIP weights {path!r} have sha256 {got}, but {card!r} records '
                         f'{want}: the file is corrupted or not the committed one; restore it '
                         f'(git checkout -- {os.path.relpath(path)}) or rebuild it')
    return path


def load_world_clip(device: str = 'cpu', path: Optional[str] = None,
                    model_name: str = MODEL_NAME) -> torch.nn.Module:
    """A committed world CLIP (default: the current one), frozen, after the sha256 check."""
    from ..clip import build_clip
    path = path or asset_path(model_name, '.pt')
    card = asset_path(model_name, '.card.json') if path == asset_path(model_name, '.pt') \
        else os.path.splitext(path)[0] + '.card.json'
    return build_clip(model_name, world_clip_weights(path, card), device)


def images_to_tensor(images) -> torch.Tensor:
    """PIL images (64 px) -> CLIP-normalised [B, 3, H, W], as the evaluation transform gives
    for images already at the model's size."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 255.0
    x = torch.from_numpy(arr).permute(0, 3, 1, 2)
    return (x - _MEAN) / _STD


#: Attributes a hard-negative group of a training batch varies, and how often.
_GROUP_KINDS = {'shape': 0.4, 'pattern': 0.3, 'colour': 0.15, 'background': 0.15}
_GROUP_SIZE = 8


def _batch_classes(rng: np.random.Generator, batch_size: int, classes: Sequence[WorldClass],
                   hard_share: float, weights: Optional[np.ndarray] = None) -> List[WorldClass]:
    """``batch_size`` training classes: a ``hard_share`` of them in groups of up to 8 that
    share all attributes but one (so the contrastive loss can only be lowered by seeing
    that one), the rest drawn at random (by ``weights`` over ``classes`` when given: stream
    v4, whose groups also draw their base class and varied values by frequency)."""
    allowed = _pretrain_index_set()
    out: List[WorldClass] = []
    kinds = list(_GROUP_KINDS)
    want = int(round(batch_size * hard_share))
    while len(out) < want:
        base = classes[int(rng.integers(len(classes)) if weights is None
                           else rng.choice(len(classes), p=weights))]
        kind = kinds[int(rng.choice(len(kinds), p=list(_GROUP_KINDS.values())))]
        pool = ATTRIBUTES[kind]
        value_p = None
        if weights is not None:
            from .captions_v4 import value_ranks
            ranks = value_ranks(kind)
            value_p = np.array([1.0 / ranks[v] for v in pool])
            value_p /= value_p.sum()
        for v in rng.choice(len(pool), min(_GROUP_SIZE, len(pool)), replace=False, p=value_p):
            cls = dataclasses.replace(base, **{kind: pool[int(v)]})
            if cls.index in allowed:  # the held-out compositions stay out of every pair
                out.append(cls)
    out = out[:want]
    rest = batch_size - len(out)
    picks = rng.integers(len(classes), size=rest) if weights is None \
        else rng.choice(len(classes), size=rest, p=weights)
    out += [classes[int(i)] for i in picks]
    return out


@lru_cache(maxsize=1)
def _stream_weights() -> np.ndarray:
    """Stream v4's class probabilities over :func:`pretrain_classes`."""
    from .captions_v4 import class_weights
    return class_weights(pretrain_classes())


@lru_cache(maxsize=1)
def _pretrain_index_set() -> frozenset:
    return frozenset(c.index for c in pretrain_classes())


def _batch(step: int, batch_size: int, seed: int, classes, tokenizer, captions: str = 'v2',
           hard_share: float = 0.0):
    weights = None
    if captions == 'v4':  # the long tail: classes drawn by frequency, not uniformly
        if len(classes) != len(_stream_weights()):
            raise ValueError('caption stream v4 draws from the pre-training classes only')
        weights = _stream_weights()
    if hard_share:
        picked = _batch_classes(np.random.default_rng([seed, step, _BATCH_STREAM]),
                                batch_size, classes, hard_share, weights)
    images, texts = [], []
    for j in range(batch_size):
        index = step * batch_size + j
        rng = object_rng(seed, index, _CAPTION_STREAM)
        if hard_share:
            cls = picked[j]
        elif weights is not None:
            cls = classes[int(rng.choice(len(classes), p=weights))]
        else:
            cls = classes[int(rng.integers(len(classes)))]
        domain = draw_domain(rng, captions)
        images.append(render_object(cls, seed, index, domain=domain))
        texts.append(caption(cls, rng, domain, captions))
    return images_to_tensor(images), tokenizer(texts)


class _StepBatches(torch.utils.data.Dataset):
    """Item ``s``: the (images, tokens) of training step ``s`` (rendered where it is read, so
    loader workers render in parallel)."""

    def __init__(self, batch_size: int, seed: int, captions: str, hard_share: float,
                 model_name: str):
        self.args = (batch_size, seed, captions, hard_share, model_name)
        self._classes = self._tokenizer = None

    def __len__(self) -> int:
        return 2 ** 31

    def __getitem__(self, step: int):
        batch_size, seed, captions, hard_share, model_name = self.args
        if self._classes is None:
            import open_clip
            register_world_model(model_name)
            self._classes = pretrain_classes()  # held-out compositions never appear in a pair
            self._tokenizer = open_clip.get_tokenizer(model_name)
        return _batch(step, batch_size, seed, self._classes, self._tokenizer, captions,
                      hard_share)


_ATTRIBUTE_STREAM = 13


class _AttributeBatches(torch.utils.data.Dataset):
    """Item ``s``: images of image pre-training step ``s`` and their attribute labels
    ``[B, 4]`` (pattern, colour, shape, background indices), pre-training classes only."""

    def __init__(self, batch_size: int, seed: int, captions: str):
        self.args = (batch_size, seed, captions)
        self._classes = None

    def __len__(self) -> int:
        return 2 ** 31

    def __getitem__(self, step: int):
        batch_size, seed, captions = self.args
        if self._classes is None:
            self._classes = pretrain_classes()
        images, labels = [], []
        for j in range(batch_size):
            index = step * batch_size + j
            rng = object_rng(seed, index, _ATTRIBUTE_STREAM)
            cls = self._classes[int(rng.integers(len(self._classes)))]
            # its own image stream: no image of contrastive training is seen here
            images.append(render_object(cls, seed + 1, index, domain=draw_domain(rng, captions)))
            labels.append([ATTRIBUTES[k].index(getattr(cls, k)) for k in ATTRIBUTES])
        return images_to_tensor(images), torch.tensor(labels)


def _lr_scale(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _trunk_lr_scale(step: int, steps: int, shape_first: int) -> float:
    """Warm-up and cosine over the shape-only phase, then again over the four-head phase,
    so the attributes added last learn at the full rate too."""
    if step < shape_first:
        return _lr_scale(step, shape_first, min(50, shape_first))
    rest = steps - shape_first
    return _lr_scale(step - shape_first, rest, min(50, rest))


def _adamw(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only (not on norms, biases, embeddings)."""
    named = [(n, p) for n, p in params if p.requires_grad]
    decay = [p for n, p in named if p.ndim >= 2 and 'embedding' not in n]
    rest = [p for n, p in named if not (p.ndim >= 2 and 'embedding' not in n)]
    return torch.optim.AdamW([{'params': decay, 'weight_decay': weight_decay},
                              {'params': rest, 'weight_decay': 0.0}], lr=lr, betas=(0.9, 0.98),
                             eps=1e-6)


def train_world_clip(out_path: str, steps: int = 1200, batch_size: int = 256, seed: int = 0,
                     lr: float = 1e-3, weight_decay: float = 0.1, warmup: int = 100,
                     threads: int = 2, captions: str = 'v2', hard_share: float = 0.0,
                     checkpoint_every: int = 100, model_name: str = MODEL_NAME,
                     device: str = 'cpu', workers: int = 0, image_steps: int = 0,
                     image_batch_size: int = 128, image_lr: float = 2e-3,
                     shape_first_steps: int = 0, trunk_from: Optional[str] = None,
                     progress: bool = True) -> Dict[str, Any]:
    """Train the world CLIP from scratch and save it (fp16).

    With ``image_steps > 0`` (v3, a timm image trunk) training has two stages, as LiT (Zhai et
    al., CVPR 2022) trains on an image tower pre-trained with labels: first the trunk alone
    learns the attributes of ``image_steps`` batches of ``image_batch_size`` labelled images
    (one softmax head per attribute, dropped afterwards; pre-training classes only; its first
    ``shape_first_steps`` steps train the shape head alone, a curriculum: with all four from
    the start, colour and texture features form first and shape is learned several times
    slower; each phase has its own warm-up and cosine), then the
    trunk is locked (``lock_image_tower``, batch-norm statistics fixed) and ``steps`` steps of
    open_clip's contrastive loss train the text tower, the image projection and the
    temperature. Without it, both towers train contrastively from scratch (v1, v2).
    ``trunk_from`` (v4) skips the image stage: the locked trunk is read from that world
    CLIP's weights (its sha256 goes into the settings) and only the contrastive stage runs.

    Every image, caption and label of step ``s`` is a function of the arguments, so a rerun
    with the same arguments and thread count gives the same weights. ``captions`` is the
    grammar (:mod:`~pomp_mm.synthetic.captions`); ``hard_share`` the share of each batch
    drawn as hard-negative groups (:func:`_batch_classes`; 0 for v1 and v2). Every
    ``checkpoint_every`` steps the model, optimiser and losses go to ``out_path + '.ckpt'``; a
    rerun with the same arguments resumes from there (another set of arguments is refused, not
    mixed in). ``device`` runs the model elsewhere (a GPU); ``workers`` render batches in that
    many processes (the batches stay the same).

    Returns:
        Training record (settings, final losses, seconds, device).
    """
    import open_clip
    from ..fileio import atomic_torch_save
    check_seed(seed)
    if captions not in GRAMMARS:
        raise ValueError(f'unknown caption grammar {captions!r}; choose from {GRAMMARS}')
    if steps < 1 or batch_size < 2:
        raise ValueError(f'need steps >= 1 and batch_size >= 2, got {steps}, {batch_size}')
    if image_steps < 0 or image_batch_size < 2 or not 0 <= shape_first_steps <= image_steps:
        raise ValueError(f'need image_steps >= 0, image_batch_size >= 2 and 0 <= '
                         f'shape_first_steps <= image_steps, got {image_steps}, '
                         f'{image_batch_size}, {shape_first_steps}')
    if not 0.0 <= hard_share <= 1.0:
        raise ValueError(f'hard_share must be in [0, 1], got {hard_share!r}')
    if trunk_from is not None and image_steps:
        raise ValueError(f'trunk_from={trunk_from!r} reads a trained trunk: image_steps must be '
                         f'0, got {image_steps}')
    register_world_model(model_name)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = open_clip.create_model(model_name).to(device)
    trunk = getattr(model.visual, 'trunk', None)
    if (image_steps or trunk_from) and trunk is None:
        raise ValueError(f'image_steps and trunk_from need a timm image trunk; {model_name} '
                         'has none')
    if trunk_from is not None:
        _load_trunk(trunk, trunk_from)
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(trunk.num_features, len(v))
                                 for k, v in ATTRIBUTES.items()}).to(device) \
        if image_steps else None
    settings = {'steps': steps, 'batch_size': batch_size, 'seed': seed, 'lr': lr,
                'weight_decay': weight_decay, 'warmup': warmup, 'threads': threads,
                'captions': captions, 'hard_share': hard_share, 'model': model_name}
    if image_steps:
        settings.update(image_steps=image_steps, image_batch_size=image_batch_size,
                        image_lr=image_lr, shape_first_steps=shape_first_steps)
    if trunk_from is not None:
        settings['trunk_from_sha256'] = sha256_file(trunk_from)
    ckpt_path = out_path + '.ckpt'
    state = _read_checkpoint(ckpt_path, settings)
    first = state['step'] if state else 0
    losses = {'image': [], 'clip': []}
    spent = 0.0
    if state:
        model.load_state_dict(state['model'])
        losses, spent = state['losses'], state['seconds']
        if heads is not None and 'heads' in state:
            heads.load_state_dict(state['heads'])

    def save(step: int, opt: torch.optim.Optimizer, elapsed: float) -> None:
        atomic_torch_save({'settings': settings, 'step': step, 'losses': losses,
                           'seconds': elapsed, 'model': model.state_dict(),
                           'heads': heads.state_dict() if heads is not None else {},
                           'optimizer': opt.state_dict()}, ckpt_path)

    start = time.perf_counter()
    if first < image_steps:
        opt = _adamw(list(trunk.named_parameters()) + list(heads.named_parameters()),
                     image_lr, 0.05)
        if state:
            opt.load_state_dict(state['optimizer'])
        _train_trunk(trunk, heads, opt, first, image_steps, image_batch_size, seed, captions,
                     image_lr, shape_first_steps, device, workers, checkpoint_every,
                     losses['image'], progress,
                     lambda step: save(step, opt, spent + time.perf_counter() - start))
        state = None
    if image_steps or trunk_from is not None:
        model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=False)
    opt = _adamw(list(model.named_parameters()), lr, weight_decay)
    if state and state['step'] > image_steps:  # at image_steps it holds stage 1's optimiser
        opt.load_state_dict(state['optimizer'])
    _train_contrastive(model, opt, max(first, image_steps) - image_steps, steps, batch_size,
                       seed, captions, hard_share, model_name, lr, warmup, device, workers,
                       checkpoint_every, losses['clip'], progress, image_steps,
                       lambda step: save(step, opt, spent + time.perf_counter() - start))
    weights = {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu()
               for k, v in model.state_dict().items()}
    atomic_torch_save(weights, out_path)
    if os.path.isfile(ckpt_path):  # the weights are complete; a rerun retrains from scratch
        os.remove(ckpt_path)
    record = {**settings, 'final_loss': float(np.mean(losses['clip'][-20:])),
              'seconds': spent + time.perf_counter() - start,
              'resumed_at_step': first or None, 'device': str(device), 'workers': workers,
              'torch': torch.__version__, 'open_clip': open_clip.__version__}
    if image_steps:
        record['final_image_loss'] = float(np.mean(losses['image'][-20:]))
    return record


def _load_trunk(trunk: torch.nn.Module, path: str) -> None:
    """Copy the image trunk of the world CLIP weights at ``path`` into ``trunk``."""
    state = torch.load(path, map_location='cpu', weights_only=True)
    prefix = 'visual.trunk.'
    part = {k[len(prefix):]: v.float() if v.is_floating_point() else v
            for k, v in state.items() if k.startswith(prefix)}
    if not part:
        raise ValueError(f'{path} holds no image trunk ({prefix}* keys): is it a world CLIP '
                         'with a timm trunk (pomp-world-CNN-T)?')
    trunk.load_state_dict(part)


def _train_trunk(trunk, heads, opt, first: int, steps: int, batch_size: int, seed: int,
                 captions: str, lr: float, shape_first: int, device: str, workers: int,
                 checkpoint_every: int, losses: List[float], progress: bool, save) -> None:
    """Stage 1: the image trunk learns the four attributes (a softmax head each; the shape
    head alone for the first ``shape_first`` steps)."""
    import torch.nn.functional as F
    from tqdm import tqdm
    trunk.train()
    batches = torch.utils.data.DataLoader(
        _AttributeBatches(batch_size, seed, captions), batch_size=None,
        sampler=range(first, steps), num_workers=workers,
        prefetch_factor=4 if workers else None)
    bar = tqdm(zip(range(first, steps), batches), desc='world CLIP: image trunk', unit='step',
               disable=not progress, initial=first, total=steps)
    kinds = list(ATTRIBUTES)
    for step, (images, labels) in bar:
        for group in opt.param_groups:
            group['lr'] = lr * _trunk_lr_scale(step, steps, shape_first)
        feats = trunk(images.to(device))
        labels = labels.to(device)
        loss = sum(F.cross_entropy(heads[k](feats), labels[:, i]) for i, k in enumerate(kinds)
                   if step >= shape_first or k == 'shape')
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f'{np.mean(losses[-20:]):.3f}')
        if (step + 1) % checkpoint_every == 0:
            save(step + 1)


def _train_contrastive(model, opt, first: int, steps: int, batch_size: int, seed: int,
                       captions: str, hard_share: float, model_name: str, lr: float,
                       warmup: int, device: str, workers: int, checkpoint_every: int,
                       losses: List[float], progress: bool, offset: int, save) -> None:
    """Stage 2 (or the only stage): open_clip's contrastive loss on image-caption pairs."""
    import open_clip
    from tqdm import tqdm
    loss_fn = open_clip.ClipLoss()
    model.train()
    trunk = getattr(model.visual, 'trunk', None)
    locked = trunk is not None and not any(p.requires_grad for p in trunk.parameters())
    if locked:
        trunk.eval()  # a locked trunk keeps its batch-norm statistics
    batches = torch.utils.data.DataLoader(
        _StepBatches(batch_size, seed, captions, hard_share, model_name), batch_size=None,
        sampler=range(first, steps), num_workers=workers,
        prefetch_factor=4 if workers else None)
    bar = tqdm(zip(range(first, steps), batches), desc='world CLIP: contrastive', unit='step',
               disable=not progress, initial=first, total=steps)
    for step, (images, texts) in bar:
        for group in opt.param_groups:
            group['lr'] = lr * _lr_scale(step, steps, warmup)
        image_features, text_features, logit_scale = model(images.to(device),
                                                           texts.to(device))[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f'{np.mean(losses[-20:]):.3f}')
        if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            save(offset + step + 1)


def _read_checkpoint(path: str, settings: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A training checkpoint made with the same ``settings``, or None when there is none."""
    if not os.path.isfile(path):
        return None
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    if ckpt.get('settings') != settings:
        raise ValueError(f'{path} is a checkpoint of another training run '
                         f'({ckpt.get("settings")}, not {settings}); move it away or choose '
                         'another --out')
    return ckpt


#: Evaluation sets whose hand-prompt accuracy the card records (and the tests check).
CARD_SETS = ('shapes', 'heldout-compositions', 'domain-photo', 'domain-sketch')
#: Single-attribute probes: the phrase each value is named by inside the hand prompt.
PROBE_PHRASES = {'shape': '{}', 'colour': '{} shape', 'pattern': '{} shape',
                 'background': 'shape on {}'}
#: Image seed of the probes (no training or evaluation set uses it).
PROBE_SEED = 9001
#: Probe top-1 % a v3 CLIP must reach on every attribute.
PROBE_THRESHOLD = 80.0
_HAND = 'a photo of a {}.'


def probe_images(kind: str, per_value: int = 10, seed: int = PROBE_SEED):
    """Photos for the ``kind`` probe: ``per_value`` per value of the attribute, the other
    attributes random; ``(PIL images, labels)``."""
    from .world import check_attribute
    if kind not in PROBE_PHRASES:
        raise ValueError(f'unknown probe {kind!r}; choose from {tuple(PROBE_PHRASES)}')
    from .protocol import check_per_class
    check_per_class(per_value, 'per_value')
    check_seed(seed)
    images, labels = [], []
    offset = list(PROBE_PHRASES).index(kind)
    for k, value in enumerate(ATTRIBUTES[kind]):
        check_attribute(kind, value)
        for j in range(per_value):
            index = (offset * 100 + k) * 1000 + j
            rng = object_rng(seed, index, _CAPTION_STREAM)
            attrs = {a: pool[int(rng.integers(len(pool)))] for a, pool in ATTRIBUTES.items()}
            attrs[kind] = value
            images.append(render_object(WorldClass(**attrs), seed, index))
            labels.append(k)
    return images, labels


@torch.no_grad()
def _probe_hits(clip: torch.nn.Module, kind: str, per_value: int, seed: int,
                model_name: str):
    """(hit per image, value index per image) of the ``kind`` probe."""
    import open_clip
    import torch.nn.functional as F
    tokenizer = open_clip.get_tokenizer(model_name)
    images, labels = probe_images(kind, per_value, seed)
    feats = F.normalize(clip.encode_image(images_to_tensor(images)).float(), dim=-1)
    texts = [_HAND.format(PROBE_PHRASES[kind].format(v)) for v in ATTRIBUTES[kind]]
    text = F.normalize(clip.encode_text(tokenizer(texts)).float(), dim=-1)
    labels = torch.tensor(labels)
    return (feats @ text.T).argmax(-1) == labels, labels


def attribute_probes(clip: torch.nn.Module, per_value: int = 10, seed: int = PROBE_SEED,
                     model_name: str = MODEL_NAME) -> Dict[str, float]:
    """Top-1 % of the hand prompt naming one attribute ("a photo of a {colour} shape.") on
    photos where the other attributes are random, for each of :data:`PROBE_PHRASES`."""
    out = {}
    for kind in PROBE_PHRASES:
        hits, _ = _probe_hits(clip, kind, per_value, seed, model_name)
        out[kind] = round(float(hits.float().mean()) * 100, 2)
    return out


def attribute_probes_by_half(clip: torch.nn.Module, per_value: int = 10,
                             seed: int = PROBE_SEED,
                             model_name: str = MODEL_NAME) -> Dict[str, float]:
    """:func:`attribute_probes` on the head and the tail half of each attribute's values by
    caption stream v4's ranks: keys ``'<kind>-head'`` and ``'<kind>-tail'``."""
    from .captions_v4 import is_tail
    out = {}
    for kind in PROBE_PHRASES:
        hits, labels = _probe_hits(clip, kind, per_value, seed, model_name)
        tail = torch.tensor([is_tail(kind, ATTRIBUTES[kind][int(i)]) for i in labels])
        for half, mask in (('head', ~tail), ('tail', tail)):
            out[f'{kind}-{half}'] = round(float(hits[mask].float().mean()) * 100, 2)
    return out


@torch.no_grad()
def hand_prompt_accuracy(clip: torch.nn.Module, set_names=CARD_SETS,
                         model_name: str = MODEL_NAME, version: str = 'v3') -> Dict[str, float]:
    """Top-1 % of ``'a photo of a {}.'`` on the evaluation sets of protocol ``version``,
    rendered in memory."""
    import torch.nn.functional as F
    from ..text_encoder import PompTextEncoder
    from .datasets import render_eval_set
    from .protocol import eval_sets
    encoder = PompTextEncoder(clip_model=model_name, clip_module=clip, vocabulary=['object'],
                              templates='single', cat_bg=False).eval()
    out = {}
    sets = eval_sets(version)
    for name in set_names:
        images, labels = render_eval_set(sets[name])
        feats = torch.cat([F.normalize(clip.encode_image(images_to_tensor(images[i:i + 1024]))
                                       .float(), dim=-1) for i in range(0, len(images), 1024)])
        text = encoder.encode_text(list(sets[name].classnames))
        pred = (feats @ text.T).argmax(-1)
        out[name] = round(float((pred == torch.tensor(labels)).float().mean()) * 100, 2)
    return out


def write_card(weights: str, record: Dict[str, Any], command: str,
               path: str = CARD_PATH, version: str = 'v3',
               model_name: str = MODEL_NAME) -> Dict[str, Any]:
    """Record sha256, command, training settings, hand-prompt accuracies on protocol
    ``version``'s card sets and the attribute probes of ``weights``."""
    from ..clip import build_clip
    clip = build_clip(model_name, weights)
    card = {'model': model_name, 'weights': os.path.basename(weights),
            'sha256': sha256_file(weights), 'bytes': os.path.getsize(weights),
            'command': command, 'training': record, 'protocol': version,
            'hand_prompt_top1': hand_prompt_accuracy(clip, model_name=model_name,
                                                     version=version),
            'probes_top1': attribute_probes(clip, model_name=model_name),
            'probes_top1_by_v4_half': attribute_probes_by_half(clip, model_name=model_name),
            'probe_per_value': 10, 'probe_seed': PROBE_SEED,
            'tolerance_points': 1.0}
    from ..fileio import atomic_write
    payload = (json.dumps(card, indent=1) + '\n').encode()
    atomic_write(path, lambda f: f.write(payload))
    return card


def check_probes(card: Dict[str, Any], threshold: float = PROBE_THRESHOLD,
                 head_only: bool = False) -> None:
    """Raise naming every probe of ``card`` below ``threshold`` (a build that fails it keeps
    its weights and card, so the run is not lost). ``head_only`` (v4): only the probes on the
    frequent half of each attribute's values must pass; the tail is reported, not checked."""
    probes = card.get('probes_top1', {})
    if head_only:
        probes = {k: v for k, v in card.get('probes_top1_by_v4_half', {}).items()
                  if k.endswith('-head')}
    low = {k: v for k, v in probes.items() if v < threshold}
    if low:
        raise ValueError('attribute probes below ' f'{threshold:.0f} %: ' +
                         ', '.join(f'{k} {v:.1f} %' for k, v in low.items()) +
                         f' (weights and card kept: {card["weights"]})')
