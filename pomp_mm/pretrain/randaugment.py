"""RandAugment as the official POMP code runs it (Dassl's ``'randaugment2'`` transform).

Each call picks ``n`` operations uniformly with replacement from a fixed list of 15, then applies
each with probability ``p`` at a magnitude drawn uniformly over that operation's range; the
geometric operations also flip the sign of their magnitude with probability 1/2. This differs
from torchvision's ``RandAugment(num_ops, magnitude)``, which always applies its ops at one fixed
magnitude. The operation list, ranges and PIL operations follow Dassl
(``dassl/data/transforms/randaugment.py``, ``randaugment_list2`` / ``RandAugment2``); random
numbers come from torch's global generator, so ``torch.manual_seed`` (and mmengine's per-worker
seeding) makes the augmentation reproducible.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch
from PIL import Image, ImageEnhance, ImageOps

__all__ = ['DasslRandAugment', 'RANDAUGMENT2_OPS']


def _affine(img: Image.Image, coeffs: Tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, coeffs)


# name -> (operation(img, value), low, high, random sign); Dassl's randaugment_list2 order
_OPS: Dict[str, Tuple[Callable[[Image.Image, float], Image.Image], float, float, bool]] = {
    'AutoContrast': (lambda img, v: ImageOps.autocontrast(img), 0.0, 1.0, False),
    'Brightness': (lambda img, v: ImageEnhance.Brightness(img).enhance(v), 0.1, 1.9, False),
    'Color': (lambda img, v: ImageEnhance.Color(img).enhance(v), 0.1, 1.9, False),
    'Contrast': (lambda img, v: ImageEnhance.Contrast(img).enhance(v), 0.1, 1.9, False),
    'Equalize': (lambda img, v: ImageOps.equalize(img), 0.0, 1.0, False),
    'Identity': (lambda img, v: img, 0.0, 1.0, False),
    'Invert': (lambda img, v: ImageOps.invert(img), 0.0, 1.0, False),
    'Posterize': (lambda img, v: ImageOps.posterize(img, int(v)), 4.0, 8.0, False),
    'Rotate': (lambda img, v: img.rotate(v), -30.0, 30.0, True),
    'Sharpness': (lambda img, v: ImageEnhance.Sharpness(img).enhance(v), 0.1, 1.9, False),
    'ShearX': (lambda img, v: _affine(img, (1, v, 0, 0, 1, 0)), -0.3, 0.3, True),
    'ShearY': (lambda img, v: _affine(img, (1, 0, 0, v, 1, 0)), -0.3, 0.3, True),
    'Solarize': (lambda img, v: ImageOps.solarize(img, v), 0.0, 256.0, False),
    'TranslateX': (lambda img, v: _affine(img, (1, 0, v * img.size[0], 0, 1, 0)), -0.3, 0.3,
                   True),
    'TranslateY': (lambda img, v: _affine(img, (1, 0, 0, 0, 1, v * img.size[1])), -0.3, 0.3,
                   True),
}

#: ``(name, low, high)`` of every operation, in Dassl's order.
RANDAUGMENT2_OPS: List[Tuple[str, float, float]] = [(k, lo, hi) for k, (_, lo, hi, _s) in
                                                    _OPS.items()]


def _rand() -> float:
    return float(torch.rand(()))


class DasslRandAugment:
    """Dassl's ``RandAugment2(n, p)``: ``n`` random ops, each applied with probability ``p`` at
    a uniformly drawn magnitude (see the module docstring).

    Args:
        n: Operations drawn per image (with replacement), >= 0.
        p: Probability of applying each drawn operation, in [0, 1].
    """

    def __init__(self, n: int = 2, p: float = 0.6) -> None:
        if int(n) != n or n < 0:
            raise ValueError(f'n must be a non-negative integer, got {n!r}')
        if not 0.0 <= p <= 1.0:
            raise ValueError(f'p must be in [0, 1], got {p!r}')
        self.n, self.p = int(n), float(p)

    def plan(self) -> List[Tuple[str, float]]:
        """Draws one call's ``(op name, value)`` list (applied ops only), consuming the random
        numbers in Dassl's order: the ``n`` ops first, then per op the apply draw, the
        magnitude and, for geometric ops, the sign."""
        names = list(_OPS)
        picks = torch.randint(len(names), (self.n,)).tolist()
        planned = []
        for i in picks:
            name = names[i]
            _, low, high, signed = _OPS[name]
            if _rand() > self.p:  # Dassl skips when random() > p: applied with probability p
                continue
            value = _rand() * (high - low) + low
            if signed and _rand() > 0.5:
                value = -value
            planned.append((name, value))
        return planned

    def __call__(self, img: Image.Image) -> Image.Image:
        for name, value in self.plan():
            img = _OPS[name][0](img, value)
        return img

    def __repr__(self) -> str:
        return f'{type(self).__name__}(n={self.n}, p={self.p})'
