"""Optional image-feature cache for prompt pre-training.

The CLIP image tower is frozen during POMP pre-training, so the features of ``V`` augmented
views of every image can be computed once (:func:`build_feature_cache`) and training then reads
them (:class:`CachedFeatures` + :func:`collate_features`) instead of decoding, augmenting and
encoding images at every step. The price is a fixed set of ``V`` views per image for the whole
run instead of fresh augmentations each epoch.

Layout of a cache folder::

    meta.json          settings, per-shard bookkeeping, completed shards, skipped images
    shard_00000.pt     {'features': [n, V, D] (float16 by default), 'labels': [n] long,
    shard_00001.pt      'indices': [n] long (dataset indices)} for dataset indices
    ...                 [s * shard_size, (s + 1) * shard_size), unreadable images left out

The views of dataset index ``i`` are drawn with the augmentation RNG seeded from ``(seed, i)``
(:func:`load_views`), so a build does not depend on the batch size, the number of workers or
which shards an interrupted build had already finished.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import random
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.registry import DATASETS, FUNCTIONS
from torch.utils.data import DataLoader, Dataset

from ..clip import image_features, weights_fingerprint
from ..fileio import atomic_torch_save, atomic_write
from .data import collate_views

__all__ = ['build_feature_cache', 'CachedFeatures', 'collate_features', 'load_views',
           'view_seed', 'read_cache_meta', 'shard_name', 'visual_fingerprint', 'META_FILE']

logger = logging.getLogger(__name__)

META_FILE = 'meta.json'
FORMAT_VERSION = 1
_DTYPES = {'float16': torch.float16, 'float32': torch.float32, 'bfloat16': torch.bfloat16}
# Settings that must match for a resumed build to extend the shards already on disk.
_SETTING_KEYS = ('format', 'dataset_length', 'num_views', 'shard_size', 'seed', 'dtype',
                 'model_id', 'visual_fingerprint')


def shard_name(shard: int) -> str:
    """File name of shard number ``shard``."""
    return f'shard_{shard:05d}.pt'


def view_seed(seed: int, index: int) -> int:
    """Augmentation seed of dataset index ``index`` (a hash, so neighbouring seeds and indices
    do not give correlated torch generator streams)."""
    digest = hashlib.blake2b(f'views/{seed}/{index}'.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'little') & ((1 << 63) - 1)


def load_views(dataset: Dataset, index: int, seed: int) -> Optional[dict]:
    """``dataset[index]`` with torch's and Python's global RNGs seeded from ``(seed, index)``:
    the exact views :func:`build_feature_cache` caches for that index.

    This reseeds the global RNGs of the calling process; :func:`build_feature_cache` restores
    them afterwards.
    """
    s = view_seed(seed, index)
    torch.manual_seed(s)
    random.seed(s)
    return dataset[index]


class _SeededViews(Dataset):
    """A range of a views dataset whose augmentations are seeded per index."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], seed: int):
        self.dataset, self.indices, self.seed = dataset, indices, seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Optional[dict]:
        return load_views(self.dataset, self.indices[i], self.seed)


def visual_fingerprint(visual: torch.nn.Module) -> str:
    """Hash of an image tower's weights (:func:`~pomp_mm.clip.weights_fingerprint`): a cache
    is only valid for the tower that made it."""
    return weights_fingerprint(visual)


def _image_encoder(model_or_visual: torch.nn.Module
                   ) -> Tuple[Callable[[torch.Tensor], torch.Tensor], torch.nn.Module,
                              Optional[str]]:
    """(encode: [..., 3, H, W] -> L2-normalised [M, D], the image tower, a model id)."""
    if hasattr(model_or_visual, 'encode_images') and hasattr(model_or_visual, 'visual'):
        text_encoder = getattr(model_or_visual, 'text_encoder', None)
        return (model_or_visual.encode_images, model_or_visual.visual,
                getattr(text_encoder, 'model_id', None))
    # an open_clip CLIP model brings its tower as .visual; anything else is the tower itself
    visual = getattr(model_or_visual, 'visual', None)
    if not isinstance(visual, torch.nn.Module):
        visual = model_or_visual

    @torch.no_grad()
    def encode(images: torch.Tensor) -> torch.Tensor:
        # PompPretrainer.encode_images' computation, so both give identical caches
        return image_features(visual, images)

    return encode, visual, getattr(visual, 'model_id', None)


def read_cache_meta(cache_dir: str) -> Dict[str, Any]:
    """The ``meta.json`` of a feature cache.

    Raises:
        FileNotFoundError: ``cache_dir`` has no ``meta.json``.
    """
    path = os.path.join(cache_dir, META_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{path!r} not found: {cache_dir!r} is not a feature cache (build one with '
            f'tools/cache_features.py)')
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _write_meta(out_dir: str, meta: Dict[str, Any]) -> None:
    payload = json.dumps(meta, indent=1).encode()
    atomic_write(os.path.join(out_dir, META_FILE), lambda f: f.write(payload))


def _missing_shards(cache_dir: str, meta: Dict[str, Any]) -> List[str]:
    done = set(meta.get('completed_shards', []))
    names = [shard_name(s) for s in range(meta['num_shards'])]
    return [n for n in names if n not in done or not os.path.isfile(os.path.join(cache_dir, n))]


def build_feature_cache(model_or_visual: torch.nn.Module,
                        dataset: Dataset,
                        out_dir: str,
                        num_views: Optional[int] = None,
                        batch_size: int = 64,
                        shard_size: int = 4096,
                        device: Union[str, torch.device] = 'cpu',
                        num_workers: int = 0,
                        seed: int = 0,
                        dtype: Union[str, torch.dtype] = 'float16',
                        progress: bool = True) -> Dict[str, Any]:
    """Encode ``num_views`` augmented views of every image of ``dataset`` into a sharded cache.

    Resumable: shards listed as completed in ``out_dir/meta.json`` (and present) are kept; the
    others are (re)computed and each is written atomically, then recorded in ``meta.json``.

    Args:
        model_or_visual: A :class:`PompPretrainer` (its ``encode_images`` is used) or a bare
            image tower (output features are L2-normalised here). Its image tower is moved to
            ``device`` and put in eval mode.
        dataset: A views dataset (``__getitem__`` -> ``{'inputs': [V, 3, H, W], 'label',
            'index'}`` or None for an unreadable image), e.g. :class:`ImageList`.
        out_dir: Cache folder (created if needed).
        num_views: Views per image; None keeps ``dataset.num_views``.
        batch_size: Images per image-tower call.
        shard_size: Dataset indices per shard.
        device: Where the image tower runs.
        num_workers: DataLoader workers decoding and augmenting images.
        seed: Augmentation seed; views of index ``i`` depend on ``(seed, i)`` only.
        dtype: Storage dtype of the features, ``'float16'`` (default, half the disk and memory;
            relative rounding error <= 2**-11) or ``'float32'`` (exact).
        progress: Show a tqdm progress bar.

    Returns:
        The final ``meta.json`` content.

    Raises:
        ValueError: Bad arguments, or ``out_dir`` holds a cache made with other settings.
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f'batch_size and shard_size must be >= 1, got {batch_size} and '
                         f'{shard_size}')
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).replace('torch.', '')
    if dtype not in _DTYPES:
        raise ValueError(f'dtype must be one of {sorted(_DTYPES)}, got {dtype!r}')
    if num_views is not None and num_views < 1:
        raise ValueError(f'num_views must be >= 1, got {num_views}')
    old_views = getattr(dataset, 'num_views', None)
    views = num_views or old_views
    if views is None:
        raise ValueError(f'{type(dataset).__name__} has no num_views attribute: pass num_views')
    encode, visual, model_id = _image_encoder(model_or_visual)
    visual.to(device).eval()
    length = len(dataset)
    num_shards = (length + shard_size - 1) // shard_size
    settings = {'format': FORMAT_VERSION, 'dataset_length': length, 'num_views': views,
                'shard_size': shard_size, 'seed': seed, 'dtype': dtype, 'model_id': model_id,
                'visual_fingerprint': visual_fingerprint(visual)}
    meta = _start_meta(out_dir, settings, dataset, num_shards)
    if meta.get('feature_dim') is None:  # known before any image is read: empty shards
        meta['feature_dim'] = getattr(visual, 'output_dim', None)
    todo = [s for s in range(num_shards) if shard_name(s) in _missing_shards(out_dir, meta)]
    done_images = sum(min(length, (s + 1) * shard_size) - s * shard_size
                      for s in range(num_shards) if s not in todo)
    if not todo:
        logger.info('feature cache %s is already complete (%d shards)', out_dir, num_shards)

    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=length, initial=done_images, unit='img', desc='caching features')
    py_state = random.getstate()
    try:
        if views != old_views:
            dataset.num_views = views  # the views datasets read it in __getitem__
        # load_views reseeds the global RNGs: hand the caller's back untouched
        with torch.random.fork_rng(devices=[]):
            for s in todo:
                _build_shard(encode, dataset, out_dir, meta, s, views, batch_size, num_workers,
                             device, _DTYPES[dtype], bar)
    finally:
        random.setstate(py_state)
        if views != old_views:
            dataset.num_views = old_views
        if bar is not None:
            bar.close()
    return meta


def _start_meta(out_dir: str, settings: Dict[str, Any], dataset: Dataset,
                num_shards: int) -> Dict[str, Any]:
    """Fresh meta, or the one of an interrupted build with the same settings."""
    os.makedirs(out_dir, exist_ok=True)
    # leftovers of writes killed mid-way (atomic_write only cleans up on exceptions)
    for name in os.listdir(out_dir):
        if name.startswith(('.shard_', '.' + META_FILE)) and name.endswith('.tmp'):
            os.unlink(os.path.join(out_dir, name))
    if os.path.isfile(os.path.join(out_dir, META_FILE)):
        meta = read_cache_meta(out_dir)
        diff = {k: (meta.get(k), settings[k]) for k in _SETTING_KEYS
                if meta.get(k) != settings[k]}
        if diff:
            detail = ', '.join(f'{k}: cached {a!r}, now {b!r}' for k, (a, b) in diff.items())
            raise ValueError(f'{out_dir!r} holds a feature cache made with other settings '
                             f'({detail}); delete it or choose another out_dir')
        return meta
    vocab = getattr(dataset, 'vocabulary', None)
    meta = dict(settings, num_shards=num_shards, dataset=type(dataset).__name__,
                feature_dim=None, completed_shards=[], shards={}, skipped_images=0,
                num_images=0, complete=num_shards == 0)
    if vocab is not None:  # same metainfo as the image dataset: mmengine compares it on resume
        meta.update(num_classes=len(vocab), vocabulary=vocab.source,
                    metainfo={'classes': list(vocab.names), 'ids': list(vocab.ids)})
    _write_meta(out_dir, meta)
    return meta


def _build_shard(encode: Callable, dataset: Dataset, out_dir: str, meta: Dict[str, Any],
                 shard: int, views: int, batch_size: int, num_workers: int,
                 device: Union[str, torch.device], dtype: torch.dtype, bar) -> None:
    start = shard * meta['shard_size']
    stop = min(meta['dataset_length'], start + meta['shard_size'])
    loader = DataLoader(_SeededViews(dataset, range(start, stop), meta['seed']),
                        batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_views)
    feats: List[torch.Tensor] = []
    labels: List[torch.Tensor] = []
    indices: List[torch.Tensor] = []
    skipped = 0
    for batch in loader:
        skipped += int(batch['skipped'])
        if 'inputs' in batch:
            images = batch['inputs']
            if images.dim() != 5 or images.shape[1] != views:
                raise ValueError(f'expected [B, {views}, 3, H, W] views from '
                                 f'{type(dataset).__name__}, got {tuple(images.shape)}')
            with torch.no_grad():
                f = encode(images.to(device))
            feats.append(f.reshape(images.shape[0], views, -1).cpu().to(dtype))
            labels.append(batch['labels'])
            indices.append(batch['indices'])
        if bar is not None:
            bar.update(int(batch['skipped']) + (len(batch['labels']) if 'labels' in batch else 0))
    dim = feats[0].shape[-1] if feats else (meta.get('feature_dim') or 0)
    if meta.get('feature_dim') is not None and feats and dim != meta['feature_dim']:
        raise ValueError(f'shard {shard}: feature dim {dim} differs from the cache\'s '
                         f'{meta["feature_dim"]}')
    name = shard_name(shard)
    atomic_torch_save({
        'features': torch.cat(feats) if feats else torch.empty(0, views, dim, dtype=dtype),
        'labels': torch.cat(labels) if labels else torch.empty(0, dtype=torch.long),
        'indices': torch.cat(indices) if indices else torch.empty(0, dtype=torch.long),
    }, os.path.join(out_dir, name))
    if skipped:
        logger.warning('shard %s: %d unreadable images skipped', name, skipped)
    # meta goes after the shard: an interruption in between only costs a recomputation
    meta['feature_dim'] = dim if feats else meta.get('feature_dim')
    meta['shards'][name] = {'start': start, 'stop': stop, 'num_images': stop - start - skipped,
                            'skipped': skipped}
    meta['completed_shards'] = sorted(set(meta['completed_shards']) | {name})
    meta['skipped_images'] = sum(meta['shards'][n]['skipped'] for n in meta['completed_shards'])
    meta['num_images'] = sum(meta['shards'][n]['num_images'] for n in meta['completed_shards'])
    meta['complete'] = len(meta['completed_shards']) == meta['num_shards']
    _write_meta(out_dir, meta)


def _load_shard(path: str, mmap: bool) -> Dict[str, torch.Tensor]:
    if mmap:
        try:  # memory-mapped: pages load on access, so a large cache needs little RAM
            return torch.load(path, map_location='cpu', mmap=True, weights_only=True)
        except TypeError:  # torch < 2.1 has no mmap argument
            pass
    return torch.load(path, map_location='cpu', weights_only=True)


@DATASETS.register_module()
class CachedFeatures(Dataset):
    """Image features cached by :func:`build_feature_cache` (``tools/cache_features.py``).

    Samples are ``{'features': [V, D] float32, 'label': int, 'index': int}`` (``index``: the
    image's index in the original dataset); batch them with :func:`collate_features`.

    Args:
        cache_dir: The cache folder.
        mmap: Memory-map the shards (torch >= 2.1) rather than reading them into memory.

    Raises:
        FileNotFoundError: No ``meta.json`` in ``cache_dir``.
        RuntimeError: The cache is incomplete (an interrupted build); the message names the
            missing shards.
    """

    def __init__(self, cache_dir: str, mmap: bool = True):
        meta = read_cache_meta(cache_dir)
        if meta.get('format') != FORMAT_VERSION:
            raise ValueError(f'{cache_dir!r}: cache format {meta.get("format")!r} is not '
                             f'{FORMAT_VERSION}; rebuild it')
        missing = _missing_shards(cache_dir, meta)
        if missing:
            shown = ', '.join(missing[:10]) + (f' and {len(missing) - 10} more'
                                               if len(missing) > 10 else '')
            raise RuntimeError(
                f'feature cache {cache_dir!r} is incomplete: {len(missing)} of '
                f'{meta["num_shards"]} shards missing ({shown}); rerun tools/cache_features.py '
                f'with the same config and --out-dir to finish it')
        self.cache_dir, self.meta = cache_dir, meta
        self.num_views, self.feature_dim = meta['num_views'], meta['feature_dim']
        # tuples, as the image datasets have them: mmengine compares metainfo on resume
        self.metainfo = {k: tuple(v) if isinstance(v, list) else v
                         for k, v in meta.get('metainfo', {}).items()}
        self._features: List[torch.Tensor] = []
        labels, indices, offsets = [], [], [0]
        for s in range(meta['num_shards']):
            name = shard_name(s)
            data = _load_shard(os.path.join(cache_dir, name), mmap)
            n = data['features'].shape[0]
            if n and (data['features'].shape[1:] != (self.num_views, self.feature_dim)
                    or data['labels'].shape != (n,) or data['indices'].shape != (n,)):
                raise ValueError(
                    f'{name} of {cache_dir!r} has features {tuple(data["features"].shape)}, '
                    f'labels {tuple(data["labels"].shape)}, indices '
                    f'{tuple(data["indices"].shape)}; expected [n, {self.num_views}, '
                    f'{self.feature_dim}], [n], [n]')
            self._features.append(data['features'])
            # small ([n] longs): held in memory, so only features touch the mapped files
            labels.append(data['labels'].clone())
            indices.append(data['indices'].clone())
            offsets.append(offsets[-1] + n)
        self.labels = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
        self.indices = torch.cat(indices) if indices else torch.empty(0, dtype=torch.long)
        self._offsets = offsets

    def __len__(self) -> int:
        return self._offsets[-1]

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f'index {i} out of range for {n} cached images')
        i %= n
        shard = bisect.bisect_right(self._offsets, i) - 1
        row = i - self._offsets[shard]
        return {'features': self._features[shard][row].float(), 'label': int(self.labels[i]),
                'index': int(self.indices[i])}

    @property
    def class_counts(self) -> List[int]:
        """Cached images per class (for ``sampling='frequency'``)."""
        size = self.meta.get('num_classes') or (int(self.labels.max()) + 1 if len(self) else 0)
        return torch.bincount(self.labels, minlength=size).tolist()


@FUNCTIONS.register_module()
def collate_features(batch: List[dict]) -> dict:
    """Stack :class:`CachedFeatures` samples into ``{'features': [B, V, D], 'labels': [B],
    'indices': [B], 'skipped': 0}`` (unreadable images were dropped when caching)."""
    if not batch:
        return {'skipped': 0}
    return {'features': torch.stack([b['features'] for b in batch]),
            'labels': torch.tensor([b['label'] for b in batch], dtype=torch.long),
            'indices': torch.tensor([b['index'] for b in batch], dtype=torch.long),
            'skipped': 0}
