"""Deterministic rendering of the synthetic world (numpy + PIL, no other dependency).

The same ``(seed, index)`` gives the same image on any machine with the same numpy and Pillow:
every random choice comes from ``numpy.random.default_rng([seed, index, stream])``. Objects are
composited with binary masks, so a scene's label map is exact: a pixel labelled with an object
shows that object's colours (before the domain's noise).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .world import COLOURS, SHAPES, WorldClass, check_attribute

__all__ = ['DOMAINS', 'MAX_SEED', 'SceneObject', 'Scene', 'render_object', 'render_scene',
           'object_rng', 'check_domain', 'check_seed', 'check_size']

#: Rendering domains: ``'photo'`` (default), ``'sketch'`` (outline drawing on paper) and
#: ``'noisy'`` (blurred, low contrast, heavy sensor noise): the ImageNet-Sketch / -C analogues.
DOMAINS: Tuple[str, ...] = ('photo', 'sketch', 'noisy')
MAX_SEED = 2 ** 32 - 1
MIN_SIZE, MAX_SIZE = 16, 1024
_OBJECT_STREAM, _SCENE_STREAM = 1, 2


def check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise ValueError(f'unknown domain {domain!r}; known: {", ".join(DOMAINS)}')
    return domain


def check_seed(value: int, what: str = 'seed') -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
            not 0 <= int(value) <= MAX_SEED:
        raise ValueError(f'{what} must be an integer in 0..{MAX_SEED}, got {value!r}')
    return int(value)


def check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or \
            not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f'image size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got '
                         f'{size!r}')
    return int(size)


def object_rng(seed: int, index: int, stream: int = _OBJECT_STREAM) -> np.random.Generator:
    """The generator behind image ``index`` of ``seed`` (independent streams per use)."""
    return np.random.default_rng([check_seed(seed), check_seed(index, 'index'), stream])


# ---------------------------------------------------------------------------------- shapes
def _regular(n: int, start: float = math.pi / 2) -> np.ndarray:
    t = start + 2 * math.pi * np.arange(n) / n
    return np.stack([np.cos(t), -np.sin(t)], 1)


def _arc(t0: float, t1: float, n: int = 24, rx: float = 1.0, ry: float = 1.0,
         cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([cx + rx * np.cos(t), cy - ry * np.sin(t)], 1)


def _star() -> np.ndarray:
    outer, inner = _regular(5), _regular(5, math.pi / 2 + math.pi / 5) * 0.42
    return np.stack([outer, inner], 1).reshape(-1, 2)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, -y - 2.5], 1) / 17.0


def _poly(points) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


# Unit-size outlines (about [-1, 1]^2, y down). The crescent is drawn as a disc minus a disc.
_SHAPE_POINTS: Dict[str, np.ndarray] = {
    'circle': _regular(48),
    'square': _regular(4, math.pi / 4) * 1.05,
    'triangle': _regular(3) + [0, 0.2],
    'star': _star(),
    'heart': _heart(),
    'cross': _poly([(-.3, -1), (.3, -1), (.3, -.3), (1, -.3), (1, .3), (.3, .3), (.3, 1),
                    (-.3, 1), (-.3, .3), (-1, .3), (-1, -.3), (-.3, -.3)]),
    'diamond': _poly([(0, -1), (.62, 0), (0, 1), (-.62, 0)]),
    'hexagon': _regular(6),
    'pentagon': _regular(5),
    'crescent': _regular(48),
    'arrow': _poly([(-1, -.25), (.15, -.25), (.15, -.65), (1, 0), (.15, .65), (.15, .25),
                    (-1, .25)]),
    'oval': _arc(0, 2 * math.pi, 48, 1.0, 0.58)[:-1],
    'rectangle': _poly([(-1, -.5), (1, -.5), (1, .5), (-1, .5)]),
    'octagon': _regular(8, math.pi / 8),
    'trapezoid': _poly([(-.5, -.55), (.5, -.55), (1, .55), (-1, .55)]),
    'semicircle': _arc(0, math.pi, 25) + [0, 0.45],
    'kite': _poly([(0, -1), (.55, -.35), (0, 1), (-.55, -.35)]),
    'parallelogram': _poly([(-.55, -.5), (1, -.5), (.55, .5), (-1, .5)]),
    'chevron': _poly([(-1, -.7), (-.35, -.7), (.45, 0), (-.35, .7), (-1, .7), (-.2, 0)]),
    'bolt': _poly([(.2, -1), (-.6, .15), (-.05, .15), (-.3, 1), (.6, -.2), (.05, -.2),
                   (.35, -1)]),
}
assert set(_SHAPE_POINTS) == set(SHAPES)


@dataclass(frozen=True)
class _Pose:
    cx: float
    cy: float
    radius: float
    angle: float

    def place(self, points: np.ndarray) -> List[Tuple[float, float]]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        rot = points @ np.array([[c, s], [-s, c]])
        xy = rot * self.radius + [self.cx, self.cy]
        return [tuple(p) for p in xy.tolist()]

    def local(self, size: int) -> Tuple[np.ndarray, np.ndarray]:
        """Pixel centres in the object's frame (unrotated, unit radius)."""
        y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        dx, dy = (x - self.cx) / self.radius, (y - self.cy) / self.radius
        c, s = math.cos(self.angle), math.sin(self.angle)
        return dx * c + dy * s, -dx * s + dy * c


def _draw(size: int, polys: Sequence[Tuple[Sequence[Tuple[float, float]], int]],
          outline: int = 0) -> np.ndarray:
    from PIL import Image, ImageDraw
    img = Image.new('L', (size, size), 0)
    draw = ImageDraw.Draw(img)
    for points, value in polys:
        if outline:
            draw.line(list(points) + [points[0]], fill=value, width=outline, joint='curve')
        else:
            draw.polygon(points, fill=value)
    return np.asarray(img) > 127


def _shape_mask(shape: str, pose: _Pose, size: int, outline: int = 0) -> np.ndarray:
    polys = [(pose.place(_SHAPE_POINTS[shape]), 255)]
    if shape == 'crescent':
        bite = _Pose(pose.cx + 0.55 * pose.radius * math.cos(pose.angle),
                     pose.cy - 0.55 * pose.radius * math.sin(pose.angle),
                     pose.radius * 0.85, pose.angle)
        polys.append((bite.place(_SHAPE_POINTS['circle']), 0))
        if outline:  # the outline of a crescent: outer rim outside the bite, plus the bite rim
            rim = _draw(size, polys[:1], outline) & ~_draw(size, polys[1:])
            return rim | (_draw(size, [(polys[1][0], 255)], outline) & _draw(size, polys[:1]))
    return _draw(size, polys, outline)


# -------------------------------------------------------------------------------- patterns
def _frac(a: np.ndarray) -> np.ndarray:
    return a - np.floor(a)


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray,
                  rng: np.random.Generator) -> Optional[np.ndarray]:
    """Where the secondary colour goes (bool), or for ``'shaded'`` a blend weight in [0, 1]."""
    k = 2.5  # pattern cycles per object radius
    if pattern in ('plain', 'hollow'):
        return None
    if pattern == 'striped':
        return _frac((u + v) * k * 0.72) < 0.5
    if pattern == 'dotted':
        du, dv = _frac(u * k) - 0.5, _frac(v * k) - 0.5
        return du * du + dv * dv < 0.09
    if pattern == 'checkered':
        return (np.floor(u * k) + np.floor(v * k)) % 2 == 0
    if pattern == 'gridded':
        return (np.abs(_frac(u * k) - 0.5) > 0.34) | (np.abs(_frac(v * k) - 0.5) > 0.34)
    if pattern == 'zigzag':
        tri = np.abs(_frac(u * 2.0) - 0.5) * 0.8
        return _frac((v + tri) * k) < 0.5
    if pattern == 'ringed':
        return _frac(np.sqrt(u * u + v * v) * k * 1.2) < 0.5
    if pattern == 'speckled':
        return rng.random(u.shape) < 0.3
    if pattern == 'shaded':
        return np.clip((u + 1.0) / 2.0, 0.0, 1.0)
    raise ValueError(f'unknown pattern {pattern!r}')


def _secondary(rgb: np.ndarray) -> np.ndarray:
    """A contrasting tone of the same hue: lighter for dark colours, darker for light ones."""
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return rgb * 0.4 + (255.0 * 0.6 if lum < 110 else 0.0)


# ----------------------------------------------------------------------------- backgrounds
def _background(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    s = size / 64.0
    phase = rng.uniform(0, 2 * math.pi, 4)
    noise = rng.normal(0, 1, (size, size, 1))
    if name == 'sand':
        base = np.array([222, 196, 148.])
        ripple = np.sin(y / (3.0 * s) + 2 * np.sin(x / (9 * s) + phase[0]))[..., None]
        return base + 10 * ripple + 12 * noise
    if name == 'grass':
        base = np.array([70, 150, 60.])
        blades = np.sin(x / (1.2 * s) + 3 * np.sin(y / (11 * s) + phase[1]))[..., None]
        return base + np.array([10, 35, 10.]) * blades + 10 * noise
    if name == 'water':
        base = np.array([55, 115, 200.])
        waves = np.sin(y / (2.2 * s) + 1.5 * np.sin(x / (6 * s) + phase[2]))[..., None]
        return base + np.array([25, 30, 30.]) * (waves > 0.6) + 6 * noise
    if name == 'snow':
        base = np.array([236, 240, 248.])
        flakes = (rng.random((size, size, 1)) < 0.04) * np.array([-40, -25, -5.])
        return base + flakes + 4 * noise
    if name == 'bricks':
        bh, bw = 8 * s, 16 * s
        row = np.floor(y / bh)
        mortar = ((y % bh) < 1.5 * s) | (((x + (row % 2) * bw / 2 + phase[3] * s) % bw) < 1.5 * s)
        brick = np.array([165, 72, 50.]) + 8 * noise
        return np.where(mortar[..., None], np.array([190, 185, 175.]), brick)
    if name == 'wood':
        base = np.array([150, 100, 58.])
        grain = np.sin(y / (1.6 * s) + 4 * np.sin(x / (17 * s) + phase[0]))[..., None]
        return base + np.array([28, 20, 12.]) * grain + 5 * noise
    raise ValueError(f'unknown background {name!r}')


# --------------------------------------------------------------------------------- objects
@dataclass(frozen=True)
class SceneObject:
    """An object to place in a scene (any background: the scene has one)."""

    pattern: str
    colour: str
    shape: str

    def __post_init__(self) -> None:
        check_attribute('pattern', self.pattern)
        check_attribute('colour', self.colour)
        check_attribute('shape', self.shape)


@dataclass
class Scene:
    """A rendered scene: ``image`` [H, W, 3] uint8, ``labels`` [H, W] uint16 (0: background,
    ``i + 1``: ``objects[i]``, the object visible on top), ``boxes`` [n, 4] of the visible pixels
    as ``x0, y0, x1, y1`` (pixel edges; an object fully hidden has no pixels and a zero box) and
    ``areas`` (visible pixels per object)."""

    image: np.ndarray
    labels: np.ndarray
    objects: List[SceneObject]
    background: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _paint_object(canvas: np.ndarray, obj: SceneObject, pose: _Pose, domain: str,
                  rng: np.random.Generator) -> np.ndarray:
    """Paint ``obj`` onto ``canvas`` in place; returns the object's pixel mask."""
    size = canvas.shape[0]
    rgb = np.array(COLOURS[obj.colour], dtype=np.float64)
    line = max(1, round(pose.radius * 0.18))
    if domain == 'sketch':
        mask = _shape_mask(obj.shape, pose, size, outline=max(1, round(size / 64)))
        fill = _shape_mask(obj.shape, pose, size) & ~mask
        u, v = pose.local(size)
        pat = _pattern_mask(obj.pattern, u, v, rng)
        if obj.pattern == 'plain':  # hatching stands for a solid fill
            canvas[fill] = canvas[fill] * 0.7 + rgb * 0.3
        elif obj.pattern == 'shaded':
            w = pat[fill][:, None] * 0.6
            canvas[fill] = canvas[fill] * (1 - w) + rgb * w
        elif pat is not None:
            strokes = fill & pat
            canvas[strokes] = canvas[strokes] * 0.35 + rgb * 0.65
        canvas[mask] = rgb
        return mask | fill
    if obj.pattern == 'hollow':
        mask = _shape_mask(obj.shape, pose, size, outline=line)
        canvas[mask] = rgb
        return mask
    mask = _shape_mask(obj.shape, pose, size)
    u, v = pose.local(size)
    pat = _pattern_mask(obj.pattern, u, v, rng)
    colour = np.broadcast_to(rgb, canvas.shape).copy()
    if pat is not None and pat.dtype == bool:
        colour[pat] = _secondary(rgb)
    elif pat is not None:
        colour = rgb * (1 - pat[..., None] * 0.7) + _secondary(rgb) * pat[..., None] * 0.7
    canvas[mask] = colour[mask]
    return mask


def _clutter(canvas: np.ndarray, rng: np.random.Generator, count: int) -> None:
    from PIL import Image, ImageDraw
    size = canvas.shape[0]
    for _ in range(count):
        layer = Image.new('L', (size, size), 0)
        x0, y0 = rng.uniform(0, size, 2)
        length, angle = rng.uniform(0.08, 0.25) * size, rng.uniform(0, 2 * math.pi)
        ImageDraw.Draw(layer).line(
            [(x0, y0), (x0 + length * math.cos(angle), y0 + length * math.sin(angle))],
            fill=255, width=max(1, round(size / 64)))
        m = np.asarray(layer) > 127
        canvas[m] = rng.integers(0, 256, 3)


def _finish(canvas: np.ndarray, domain: str, rng: np.random.Generator,
            noise: Optional[float]) -> np.ndarray:
    if domain == 'noisy':
        from PIL import Image, ImageFilter
        size = canvas.shape[0]
        img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
        img = img.filter(ImageFilter.GaussianBlur(radius=1.3 * size / 64))
        canvas = np.asarray(img, dtype=np.float64)
        canvas = 128 + (canvas - 128) * 0.65
        sigma = 22.0 if noise is None else noise
    else:
        sigma = 4.0 if noise is None else noise
    if sigma:
        canvas = canvas + rng.normal(0, sigma, canvas.shape)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _canvas(background: str, size: int, domain: str, rng: np.random.Generator) -> np.ndarray:
    canvas = _background(background, size, rng)
    if domain == 'sketch':  # paper tinted by the background, its texture as faint strokes
        tint = canvas.mean(axis=(0, 1))
        texture = canvas - canvas.mean(axis=(0, 1))
        canvas = np.full_like(canvas, 246.0) * 0.8 + tint * 0.2 + texture * 0.25
    return canvas


def render_object(cls: WorldClass, seed: int, index: int, size: int = 64,
                  domain: str = 'photo', clutter: bool = True,
                  noise: Optional[float] = None):
    """One object of class ``cls`` at a random position, scale and rotation.

    Args:
        cls: The class to draw.
        seed, index: Determine every random choice (0..2**32-1 each).
        size: Side length in pixels (16..1024).
        domain: One of :data:`DOMAINS`.
        clutter: Draw 0-3 distractor strokes.
        noise: Sensor noise sigma (default: the domain's).

    Returns:
        A PIL RGB image.
    """
    from PIL import Image
    size, domain = check_size(size), check_domain(domain)
    rng = object_rng(seed, index)
    canvas = _canvas(cls.background, size, domain, rng)
    if clutter:
        _clutter(canvas, rng, int(rng.integers(0, 4)))
    radius = rng.uniform(0.24, 0.40) * size
    margin = radius * 0.9
    pose = _Pose(rng.uniform(margin, size - margin), rng.uniform(margin, size - margin), radius,
                 rng.uniform(0, 2 * math.pi))
    _paint_object(canvas, SceneObject(cls.pattern, cls.colour, cls.shape), pose, domain, rng)
    return Image.fromarray(_finish(canvas, domain, rng, noise))


def render_scene(objects: Sequence[SceneObject], background: str, seed: int, index: int,
                 size: int = 128, domain: str = 'photo', clutter: bool = True,
                 noise: Optional[float] = None, min_radius: float = 0.08,
                 max_radius: float = 0.2) -> Scene:
    """Several objects on one background, painted in order (later ones occlude earlier ones).

    Args:
        objects: What to draw, bottom to top.
        background: One of :data:`~pomp_mm.synthetic.world.BACKGROUNDS`.
        seed, index, size, domain, clutter, noise: As :func:`render_object`.
        min_radius, max_radius: Object radius range as a fraction of ``size``.

    Returns:
        A :class:`Scene` with exact per-pixel labels and visible-pixel boxes.
    """
    size, domain = check_size(size), check_domain(domain)
    check_attribute('background', background)
    if not 0 < min_radius <= max_radius <= 0.5:
        raise ValueError(f'need 0 < min_radius <= max_radius <= 0.5, got {min_radius!r}, '
                         f'{max_radius!r}')
    objects = list(objects)
    rng = object_rng(seed, index, _SCENE_STREAM)
    canvas = _canvas(background, size, domain, rng)
    if clutter:
        _clutter(canvas, rng, int(rng.integers(0, 4)))
    labels = np.zeros((size, size), dtype=np.uint16)
    for i, obj in enumerate(objects):
        radius = rng.uniform(min_radius, max_radius) * size
        pose = _Pose(rng.uniform(radius * 0.6, size - radius * 0.6),
                     rng.uniform(radius * 0.6, size - radius * 0.6), radius,
                     rng.uniform(0, 2 * math.pi))
        labels[_paint_object(canvas, obj, pose, domain, rng)] = i + 1
    boxes = np.zeros((len(objects), 4))
    areas = np.zeros(len(objects), dtype=np.int64)
    for i in range(len(objects)):
        ys, xs = np.nonzero(labels == i + 1)
        areas[i] = len(xs)
        if len(xs):
            boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return Scene(_finish(canvas, domain, rng, noise), labels, objects, background, boxes, areas)
