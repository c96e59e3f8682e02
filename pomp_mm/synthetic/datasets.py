"""Rendering the world's datasets to disk in the formats the real tools read.

* Pre-training sets: an ``ImageList`` CSV (``path,class id`` rows) beside a flat ``images/``
  folder, one image per (class, shot): what ``tools/pretrain.py`` and
  ``tools/cache_features.py`` read through :class:`~pomp_mm.pretrain.ImageList`.
* Evaluation sets: one sub-folder of images per class (``tools/eval_classification.py
  --folder``), or rendered into memory for tests.

Scene sets for segmentation (mmseg folders) and detection (COCO json):
:mod:`pomp_mm.synthetic.scenes`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import multiprocessing
import os
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from .protocol import EVAL_IMAGE_SEED, PROTOCOL, EvalSet, check_per_class, eval_sets
from .render import check_domain, check_seed, check_size, object_rng, render_object
from .world import NUM_CLASSES, WorldClass

__all__ = ['MAX_SHOTS', 'write_pretrain_set', 'eval_image', 'render_eval_set',
           'render_workers', 'write_eval_set', 'write_eval_sets', 'pretrain_image_index']

logger = logging.getLogger(__name__)

MAX_SHOTS = 64
_EVAL_STREAM = 3
MAX_CLASSES = NUM_CLASSES


def pretrain_image_index(cls: WorldClass, shot: int) -> int:
    """Image index of shot ``shot`` of ``cls`` (distinct for every class and shot)."""
    return cls.index * MAX_SHOTS + shot


def _tqdm(total: int, desc: str, progress: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit='img', disable=not progress)


def render_workers(workers: Optional[int] = None) -> int:
    """Rendering processes: ``workers``, or one per CPU this process may use (at most 8)."""
    if workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
        return max(1, min(8, cpus or 1))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f'workers must be a positive integer, got {workers!r}')
    return workers


# (render, jobs) of the running _render_files: set before it forks, so the processes inherit
# them and receive only job numbers (an evaluation set's draw may be a lambda: not picklable)
_RENDER: Optional[Tuple[Callable, list]] = None
_PARALLEL_MIN = 256  # fewer images render faster than processes start


def _render_file(i: int) -> None:
    render, jobs = _RENDER
    path, args = jobs[i]
    render(*args).save(path + '.tmp', format='PNG')
    os.replace(path + '.tmp', path)  # a killed run leaves no half-written image


def _render_files(jobs: list, render: Callable, bar, workers: Optional[int]) -> None:
    """Render ``(path, args)`` jobs with ``render(*args)`` (a PIL image), skipping files already
    there, over ``workers`` forked processes (the images do not depend on which one)."""
    global _RENDER
    todo = [job for job in jobs if not os.path.isfile(job[0])]
    bar.update(len(jobs) - len(todo))
    workers = render_workers(workers)
    _RENDER = (render, todo)
    try:
        if workers == 1 or len(todo) < _PARALLEL_MIN or \
                'fork' not in multiprocessing.get_all_start_methods():
            for i in range(len(todo)):
                _render_file(i)
                bar.update()
            return
        with multiprocessing.get_context('fork').Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_file, range(len(todo)), chunksize=32):
                bar.update()
    finally:
        _RENDER = None


def _stamp_render(out_dir: str, settings: dict) -> None:
    """Record how ``out_dir``'s images are rendered; refuse to add images made otherwise (the
    images already there are reused, so mixing settings would go unnoticed)."""
    path = os.path.join(out_dir, 'render.json')
    if os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            had = json.load(f)
        if had != settings:
            raise ValueError(f'{out_dir} holds images rendered with {had}, not {settings}: use '
                             'another folder')
        return
    from ..fileio import atomic_write
    atomic_write(path, lambda f: f.write(json.dumps(settings).encode()))


def write_pretrain_set(out_dir: str, classes: Sequence[WorldClass], shots: int, seed: int,
                       size: int = 64, progress: bool = True, domain: str = 'photo',
                       workers: Optional[int] = None) -> str:
    """Render ``shots`` images of every class of ``classes`` in ``domain`` and write their
    ImageList CSV.

    Images already on disk (an interrupted run) are kept; the CSV is written last, so a CSV
    present means a complete set. ``workers``: rendering processes (:func:`render_workers`).

    Returns:
        The CSV path (``out_dir/train.csv``).
    """
    check_seed(seed)
    size, domain = check_size(size), check_domain(domain)
    classes = list(classes)
    if not classes:
        raise ValueError('no classes to render: the class list is empty')
    if len(classes) > MAX_CLASSES:
        raise ValueError(f'{len(classes)} classes requested; the world has {MAX_CLASSES}')
    if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= MAX_SHOTS:
        raise ValueError(f'shots must be an integer in 1..{MAX_SHOTS}, got {shots!r}')
    image_dir = os.path.join(out_dir, 'images')
    os.makedirs(image_dir, exist_ok=True)
    _stamp_render(out_dir, {'seed': seed, 'size': size, 'domain': domain})
    rows: List[Tuple[str, str]] = []
    jobs = []
    for cls in classes:
        for shot in range(shots):
            index = pretrain_image_index(cls, shot)
            rel = f'images/{index:08d}.png'
            jobs.append((os.path.join(out_dir, rel), (cls, seed, index, size, domain)))
            rows.append((rel, cls.id))
    with _tqdm(len(jobs), 'rendering pre-training images', progress) as bar:
        _render_files(jobs, render_object, bar, workers)
    csv_path = os.path.join(out_dir, 'train.csv')
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(['path', 'class'])
    writer.writerows(rows)
    from ..fileio import atomic_write
    atomic_write(csv_path, lambda f: f.write(buf.getvalue().encode()))
    return csv_path


def eval_image(eval_set: EvalSet, label: int, j: int, size: int = 64,
               seed: int = EVAL_IMAGE_SEED):
    """Image ``j`` of class ``label`` of ``eval_set`` (PIL), rendered from image seed ``seed``
    (default: the protocol's evaluation seed; any other gives new images of the same labels)."""
    if not 0 <= label < len(eval_set.classnames):
        raise ValueError(f'label {label!r} is outside 0..{len(eval_set.classnames) - 1} of '
                         f'{eval_set.name!r}')
    if not 0 <= j < 1000:
        raise ValueError(f'image number {j!r} is outside 0..999')
    index = (eval_set.offset * 1000 + label) * 1000 + j
    cls = eval_set.draw(label, object_rng(seed, index, _EVAL_STREAM))
    return render_object(cls, seed, index, size, eval_set.domain)


def _per_class(eval_set: EvalSet, per_class: Optional[int]) -> int:
    return check_per_class(eval_set.per_class if per_class is None else per_class)


def render_eval_set(eval_set: EvalSet, per_class: Optional[int] = None, size: int = 64,
                    seed: int = EVAL_IMAGE_SEED) -> Tuple[list, List[int]]:
    """All images of ``eval_set`` in memory: ``(PIL images, labels)``, class-major."""
    per_class, seed = _per_class(eval_set, per_class), check_seed(seed)
    images, labels = [], []
    for k in range(len(eval_set.classnames)):
        for j in range(per_class):
            images.append(eval_image(eval_set, k, j, size, seed))
            labels.append(k)
    return images, labels


def write_eval_set(eval_set: EvalSet, folder: str, per_class: Optional[int] = None,
                   size: int = 64, progress: bool = True, seed: int = EVAL_IMAGE_SEED,
                   workers: Optional[int] = None) -> str:
    """``folder/<class name with _>/<j>.png`` for every image of ``eval_set`` rendered from
    image seed ``seed``; a ``classes.json`` with the names in label order is written last
    (complete marker). A folder rendered with other settings is refused, not mixed.
    ``workers``: rendering processes (:func:`render_workers`)."""
    per_class, seed, size = _per_class(eval_set, per_class), check_seed(seed), check_size(size)
    if os.path.isdir(folder) and os.listdir(folder) and \
            not os.path.isfile(os.path.join(folder, 'render.json')):
        raise ValueError(f'{folder} already holds files but no render.json: its images may be '
                         'rendered otherwise (an older protocol or seed); use another folder')
    os.makedirs(folder, exist_ok=True)
    _stamp_render(folder, {'set': eval_set.name, 'seed': seed, 'size': size,
                           'domain': eval_set.domain, 'offset': eval_set.offset,
                           'classes': hashlib.sha256('\n'.join(eval_set.classnames).encode())
                           .hexdigest()[:16]})
    jobs = []
    for k, name in enumerate(eval_set.classnames):
        sub = os.path.join(folder, name.replace(' ', '_'))
        os.makedirs(sub, exist_ok=True)
        jobs += [(os.path.join(sub, f'{j:04d}.png'), (eval_set, k, j, size, seed))
                 for j in range(per_class)]
    with _tqdm(len(jobs), f'rendering {eval_set.name}', progress) as bar:
        _render_files(jobs, eval_image, bar, workers)
    with open(os.path.join(folder, 'classes.json'), 'w', encoding='utf-8') as f:
        json.dump({'name': eval_set.name, 'classes': list(eval_set.classnames),
                   'per_class': per_class, 'domain': eval_set.domain,
                   'chance': eval_set.chance, 'seed': seed}, f, indent=1)
    return folder


def write_eval_sets(root: str, names: Optional[Iterable[str]] = None,
                    per_class: Optional[int] = None, progress: bool = True,
                    seed: int = EVAL_IMAGE_SEED, version: str = PROTOCOL,
                    workers: Optional[int] = None) -> List[str]:
    """Write the named sets of protocol ``version`` (default: all) under ``root/<set name>/``,
    rendered from image seed ``seed``."""
    sets = eval_sets(version)
    names = list(sets) if names is None else list(names)
    unknown = [n for n in names if n not in sets]
    if unknown:
        raise ValueError(f'unknown evaluation set {unknown[0]!r}; known: {", ".join(sets)}')
    return [write_eval_set(sets[n], os.path.join(root, n), per_class, progress=progress,
                           seed=seed, workers=workers)
            for n in names]
