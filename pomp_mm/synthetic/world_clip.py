"""The world's small CLIP: its open_clip config, the committed weights and how they were made.

``pomp-world-ViT-T-8`` (ViT 64 px / patch 8, 4 layers x 128 wide; causal text tower 4 x 64,
context 32; 4.2 M parameters) is registered with open_clip on first use, so every pomp_mm tool
takes ``--clip-model pomp-world-ViT-T-8 --pretrained <weights>``. The weights were trained by
:func:`train_world_clip` (``python tools/synthetic_world.py train-clip``) on rendered images of
the pre-training classes with captions from :mod:`~pomp_mm.synthetic.captions`; the held-out
compositions never appear in its training pairs.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Any, Dict

import numpy as np
import torch

from .captions import GRAMMARS, caption, draw_domain
from .protocol import pretrain_classes
from .render import check_seed, object_rng, render_object

__all__ = ['MODEL_NAME', 'CONFIG_PATH', 'WEIGHTS_PATH', 'CARD_PATH', 'register_world_model',
           'world_clip_weights', 'load_world_clip', 'train_world_clip', 'sha256_file',
           'read_card', 'images_to_tensor', 'hand_prompt_accuracy', 'write_card',
           'CARD_SETS']

MODEL_NAME = 'pomp-world-ViT-T-8'
_ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets')
CONFIG_PATH = os.path.join(_ASSETS, f'{MODEL_NAME}.json')
WEIGHTS_PATH = os.path.join(_ASSETS, f'{MODEL_NAME}.pt')
#: sha256, the command that made the weights, training settings and recorded accuracies
CARD_PATH = os.path.join(_ASSETS, f'{MODEL_NAME}.card.json')
_CAPTION_STREAM = 11
_MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(3, 1, 1)
_STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(3, 1, 1)


def register_world_model() -> None:
    """Make ``pomp-world-ViT-T-8`` an open_clip model name (idempotent)."""
    import open_clip
    if MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_PATH)


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
                                f'python tools/synthetic_world.py train-clip)')
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
                                f'python tools/synthetic_world.py train-clip)')
    want = read_card(card)['sha256']
    got = sha256_file(path)
    if got != want:
        raise ValueError(f'world CLIP weights {path!r} have sha256 {got}, but {card!r} records '
                         f'{want}: the file is corrupted or not the committed one; restore it '
                         f'(git checkout -- {os.path.relpath(path)}) or rebuild it')
    return path


def load_world_clip(device: str = 'cpu', path: str = WEIGHTS_PATH) -> torch.nn.Module:
    """The committed world CLIP, frozen, after the sha256 check."""
    from ..clip import build_clip
    return build_clip(MODEL_NAME, world_clip_weights(path), device)


def images_to_tensor(images) -> torch.Tensor:
    """PIL images (64 px) -> CLIP-normalised [B, 3, H, W], as the evaluation transform gives
    for images already at the model's size."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 255.0
    x = torch.from_numpy(arr).permute(0, 3, 1, 2)
    return (x - _MEAN) / _STD


def _batch(step: int, batch_size: int, seed: int, classes, tokenizer, captions: str = 'v2'):
    images, texts = [], []
    for j in range(batch_size):
        index = step * batch_size + j
        rng = object_rng(seed, index, _CAPTION_STREAM)
        cls = classes[int(rng.integers(len(classes)))]
        domain = draw_domain(rng, captions)
        images.append(render_object(cls, seed, index, domain=domain))
        texts.append(caption(cls, rng, domain, captions))
    return images_to_tensor(images), tokenizer(texts)


def train_world_clip(out_path: str, steps: int = 900, batch_size: int = 256, seed: int = 0,
                     lr: float = 1e-3, weight_decay: float = 0.1, warmup: int = 100,
                     threads: int = 2, captions: str = 'v2',
                     progress: bool = True) -> Dict[str, Any]:
    """Train the world CLIP from scratch with open_clip's contrastive loss and save it (fp16).

    Every image-caption pair of step ``s`` is a function of ``(seed, s, batch_size,
    captions)``, so a rerun with the same arguments and thread count gives the same weights.
    ``captions`` is the grammar (:mod:`~pomp_mm.synthetic.captions`): ``v1`` photos with
    image-independent templates, ``v2`` photos, sketches and noisy images with templates that
    describe them.

    Returns:
        Training record (settings, final loss, seconds).
    """
    import open_clip
    from tqdm import tqdm
    check_seed(seed)
    if captions not in GRAMMARS:
        raise ValueError(f'unknown caption grammar {captions!r}; choose from {GRAMMARS}')
    if steps < 1 or batch_size < 2:
        raise ValueError(f'need steps >= 1 and batch_size >= 2, got {steps}, {batch_size}')
    register_world_model()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL_NAME)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    classes = pretrain_classes()  # the held-out compositions never appear in a pair
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and 'embedding' not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and 'embedding' not in n)]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': weight_decay},
                             {'params': rest, 'weight_decay': 0.0}], lr=lr, betas=(0.9, 0.98),
                            eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    model.train()
    start, losses = time.perf_counter(), []
    bar = tqdm(range(steps), desc='training world CLIP', unit='step', disable=not progress)
    for step in bar:
        scale = (step + 1) / warmup if step < warmup else \
            0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for group in opt.param_groups:
            group['lr'] = lr * scale
        images, texts = _batch(step, batch_size, seed, classes, tokenizer, captions)
        out = model(images, texts)
        image_features, text_features, logit_scale = out[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f'{np.mean(losses[-20:]):.3f}')
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    from ..fileio import atomic_torch_save
    atomic_torch_save(state, out_path)
    return {'steps': steps, 'batch_size': batch_size, 'seed': seed, 'lr': lr,
            'weight_decay': weight_decay, 'warmup': warmup, 'threads': threads,
            'captions': captions,
            'final_loss': float(np.mean(losses[-20:])), 'seconds': time.perf_counter() - start,
            'torch': torch.__version__, 'open_clip': open_clip.__version__}


#: Evaluation sets whose hand-prompt accuracy the card records (and the tests check).
CARD_SETS = ('shapes', 'heldout-compositions', 'domain-photo', 'domain-sketch')


@torch.no_grad()
def hand_prompt_accuracy(clip: torch.nn.Module, set_names=CARD_SETS,
                         model_name: str = MODEL_NAME) -> Dict[str, float]:
    """Top-1 % of ``'a photo of a {}.'`` on protocol evaluation sets, rendered in memory."""
    import torch.nn.functional as F
    from ..text_encoder import PompTextEncoder
    from .datasets import render_eval_set
    from .protocol import eval_sets
    encoder = PompTextEncoder(clip_model=model_name, clip_module=clip, vocabulary=['object'],
                              templates='single', cat_bg=False).eval()
    out = {}
    for name in set_names:
        images, labels = render_eval_set(eval_sets()[name])
        feats = F.normalize(clip.encode_image(images_to_tensor(images)).float(), dim=-1)
        text = encoder.encode_text(list(eval_sets()[name].classnames))
        pred = (feats @ text.T).argmax(-1)
        out[name] = round(float((pred == torch.tensor(labels)).float().mean()) * 100, 2)
    return out


def write_card(weights: str, record: Dict[str, Any], command: str,
               path: str = CARD_PATH) -> Dict[str, Any]:
    """Record sha256, command, training settings and hand-prompt accuracies of ``weights``."""
    from ..clip import build_clip
    clip = build_clip(MODEL_NAME, weights)
    card = {'model': MODEL_NAME, 'weights': os.path.basename(weights),
            'sha256': sha256_file(weights), 'bytes': os.path.getsize(weights),
            'command': command, 'training': record,
            'hand_prompt_top1': hand_prompt_accuracy(clip), 'tolerance_points': 1.0}
    from ..fileio import atomic_write
    payload = (json.dumps(card, indent=1) + '\n').encode()
    atomic_write(path, lambda f: f.write(payload))
    return card
