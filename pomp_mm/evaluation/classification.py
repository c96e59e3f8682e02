"""Zero-shot image classification: image features of a dataset, predictions against class
text embeddings, top-1 accuracy. Datasets: :mod:`pomp_mm.evaluation.datasets`."""
from __future__ import annotations

import logging
from typing import List, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..clip import image_features
from .datasets import ClassificationDataset

__all__ = ['accuracy', 'embed_images', 'evaluate', 'predict']

logger = logging.getLogger(__name__)


def _image_size(visual: nn.Module) -> int:
    size = getattr(visual, 'image_size', 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ValueError(f'non-square image towers ({tuple(size)}) are not supported')
        size = size[0]
    return int(size)


def _collate(batch: List[Optional[Tuple[torch.Tensor, int]]]):
    good = [b for b in batch if b is not None]
    if not good:
        return None, None, len(batch)
    return (torch.stack([b[0] for b in good]), torch.tensor([b[1] for b in good]),
            len(batch) - len(good))


@torch.no_grad()
def embed_images(visual: nn.Module, dataset: ClassificationDataset, batch_size: int = 64,
                 device: Union[str, torch.device] = 'cpu', num_workers: int = 0,
                 progress: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image features of a dataset.

    Args:
        visual: CLIP's image tower (``clip.visual``), already on ``device``.
        dataset: The images; without a transform, the tower's own preprocessing
            (``visual.preprocess_cfg``: mean/std, interpolation, resize mode; OpenAI CLIP's if it
            has none) at its input size.
        batch_size: Images per forward pass.
        device: Where the tower runs.
        num_workers: DataLoader workers.
        progress: Show a tqdm bar.

    Returns:
        ``(features [N, D] float32 on CPU, labels [N])`` for the N readable images.
    """
    if dataset.transform is None:
        from ..pretrain.data import build_transform

        # the tower's own preprocessing (open_clip sets it from the model/tag config: e.g.
        # SigLIP's mean/std 0.5 and squash resize); towers without one get OpenAI CLIP's
        dataset = dataset.with_transform(build_transform(
            False, _image_size(visual), preprocess=getattr(visual, 'preprocess_cfg', None)))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate, pin_memory=torch.device(device).type == 'cuda')
    if progress:
        from tqdm import tqdm
        loader = tqdm(loader, desc=f'embedding {dataset.name}', unit='batch')
    feats, labels, skipped = [], [], 0
    for images, targets, bad in loader:
        skipped += bad
        if images is None:
            continue
        # image_features casts to the tower's dtype
        feats.append(image_features(visual, images.to(device, non_blocking=True)).cpu())
        labels.append(targets)
    if skipped:
        logger.warning('%s: %d of %d images were unreadable and are left out', dataset.name,
                       skipped, len(dataset))
    if not feats:
        raise ValueError(f'{dataset.name}: none of its {len(dataset)} images could be read')
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def predict(image_features: torch.Tensor, text_features: torch.Tensor,
            chunk_size: int = 8192) -> torch.Tensor:
    """Nearest-class-embedding predictions [N] (indices into the rows of ``text_features``).

    Args:
        image_features: L2-normalised [N, D].
        text_features: L2-normalised class embeddings [C, D].
        chunk_size: Images per matrix product, bounding memory for large C.
    """
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(f'image features are {image_features.shape[1]}-d but text features '
                         f'are {text_features.shape[1]}-d')
    text = text_features.float()
    out = []
    for start in range(0, image_features.shape[0], chunk_size):
        img = image_features[start:start + chunk_size].to(text.device, torch.float32)
        out.append((img @ text.t()).argmax(dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy(image_features: torch.Tensor, labels: torch.Tensor,
             text_features: torch.Tensor, chunk_size: int = 8192) -> float:
    """Top-1 accuracy in percent of nearest-class-embedding predictions (see :func:`predict`;
    ``labels`` [N] index the rows of ``text_features``)."""
    pred = predict(image_features, text_features, chunk_size)
    return 100.0 * int((pred == labels.cpu()).sum()) / len(labels)


def evaluate(encoder_or_text_features: Union[nn.Module, torch.Tensor], visual: nn.Module,
             dataset: ClassificationDataset, batch_size: int = 64,
             device: Union[str, torch.device] = 'cpu', num_workers: int = 0,
             progress: bool = True) -> float:
    """Zero-shot top-1 accuracy (percent) of a text encoder on a dataset.

    Args:
        encoder_or_text_features: A :class:`~pomp_mm.PompTextEncoder` (anything with
            ``encode_text(names)``) that embeds the class names once, or ready L2-normalised
            class embeddings [C, D] in the dataset's class order.
        visual: CLIP's image tower, on ``device``.
        dataset: The images and class names.
        batch_size, device, num_workers, progress: As for :func:`embed_images`.
    """
    if isinstance(encoder_or_text_features, torch.Tensor):
        text = encoder_or_text_features
    else:
        with torch.no_grad():
            text = encoder_or_text_features.encode_text(list(dataset.classnames))
    if text.shape[0] != len(dataset.classnames):
        raise ValueError(f'{dataset.name}: {text.shape[0]} class embeddings for '
                         f'{len(dataset.classnames)} classes')
    feats, labels = embed_images(visual, dataset, batch_size, device, num_workers, progress)
    return accuracy(feats, labels, text.to(device))
