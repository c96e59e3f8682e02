"""Zero-shot image classification datasets: readers of the layouts POMP evaluates on.

Datasets are read from the layouts CoOp (Zhou et al.) documents, the ones POMP evaluates on:

* the 10 cross-dataset transfer targets (:data:`CROSS_DATASETS`), from CoOp's
  ``split_zhou_<Name>.json`` files (``'test'`` split) or, for FGVC-Aircraft, its own list files;
* ImageNet-1K val and its variants ImageNet-V2 / -Sketch / -A / -R (:data:`IMAGENET_DATASETS`);
* the ImageNet-21K held-out split POMP pre-trains next to (:class:`~pomp_mm.pretrain.ImageNet21K`);
* any folder with one sub-folder of images per class (:func:`image_folder_dataset`).

A missing dataset raises :class:`DatasetNotFound` naming the missing path, so callers can skip it.
Nothing here imports MMDetection, MMSegmentation or MMCV.
"""
from __future__ import annotations

import json
import logging
import os
import pkgutil
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from ..imagefiles import labelled_images, list_class_folders, list_images
from ..vocabulary import clean_name, load_vocabulary

__all__ = [
    'ALL_DATASETS', 'COOP_LAYOUTS', 'CROSS_DATASETS', 'IMAGENET_DATASETS', 'ClassificationDataset',
    'CoopLayout', 'DatasetNotFound', 'build_dataset', 'image_folder_dataset', 'read_coop_split',
    'read_fgvc_aircraft', 'resolve_dataset_names'
]

logger = logging.getLogger(__name__)

Item = Tuple[str, int]


class DatasetNotFound(FileNotFoundError):
    """A dataset is not on disk.

    Attributes:
        dataset: The dataset's name.
        path: The first missing folder or file (the one to create).
    """

    def __init__(self, dataset: str, path: str):
        super().__init__(f'{dataset}: {path!r} not found')
        self.dataset = dataset
        self.path = path


class ClassificationDataset(Dataset):
    """Labelled images for zero-shot classification.

    Items yield ``(image_tensor, label)``, or None for an unreadable image (logged; the
    evaluation drops it and counts it).

    Args:
        name: Dataset name (for logs and tables).
        items: ``(image_path, label)`` pairs; labels index ``classnames``.
        classnames: Class names as they go into prompts.
        transform: PIL image -> tensor; None until :meth:`with_transform` sets one (the
            evaluation picks CLIP preprocessing for the image tower's input size).
        root: The folder the dataset was read from.
    """

    def __init__(self, name: str, items: Sequence[Item], classnames: Sequence[str],
                 transform: Optional[Callable] = None, root: Optional[str] = None):
        self.name = name
        self.items: List[Item] = list(items)
        self.classnames: List[str] = list(classnames)
        self.transform = transform
        self.root = root
        bad = [(p, label) for p, label in self.items
               if not 0 <= label < len(self.classnames)]
        if bad:
            raise ValueError(f'{name}: label {bad[0][1]} of {bad[0][0]!r} is outside the '
                             f'{len(self.classnames)} classes')

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Optional[Tuple[torch.Tensor, int]]:
        from PIL import Image, UnidentifiedImageError
        if self.transform is None:
            raise RuntimeError(f'{self.name}: no transform set; call with_transform() first')
        path, label = self.items[index]
        try:
            with Image.open(path) as img:
                img = img.convert('RGB')
        except (OSError, UnidentifiedImageError, ValueError) as err:
            logger.warning('%s: skipping unreadable image %s: %s', self.name, path, err)
            return None
        return self.transform(img), label

    def _copy(self, items: Sequence[Item], transform: Optional[Callable]) -> ClassificationDataset:
        return ClassificationDataset(self.name, items, self.classnames, transform, self.root)

    def with_transform(self, transform: Callable) -> ClassificationDataset:
        """A copy that applies ``transform``."""
        return self._copy(self.items, transform)

    def subset(self, max_images: Optional[int]) -> ClassificationDataset:
        """At most ``max_images`` items, evenly spaced so that (sorted) classes stay mixed."""
        if max_images is None or max_images >= len(self.items):
            return self
        if max_images < 1:
            raise ValueError(f'max_images must be >= 1, got {max_images}')
        n = len(self.items)
        return self._copy([self.items[i * n // max_images] for i in range(max_images)],
                          self.transform)


# ------------------------------------------------------------------------------------------
# Readers
# ------------------------------------------------------------------------------------------

def _require(dataset: str, path: str, kind: str = 'dir') -> str:
    ok = os.path.isdir(path) if kind == 'dir' else os.path.isfile(path)
    if not ok:
        raise DatasetNotFound(dataset, path)
    return path


def read_coop_split(split_file: str, image_dir: str,
                    split: str = 'test') -> Tuple[List[Item], List[str]]:
    """Read a CoOp ``split_zhou_<Name>.json``.

    The file maps ``'train'``, ``'val'`` and ``'test'`` to lists of
    ``[image_path_relative_to_image_dir, label, classname]``. Class names come from the
    ``classname`` fields of all splits, ordered by label, with ``'_'`` turned into spaces (as
    CoOp's trainers do before prompting). Names are otherwise kept as the JSON has them: CoOp
    wrote its EuroSAT and Caltech101 splits with descriptive names already ("Annual Crop Land",
    "airplane"), so no renaming table is applied here.

    Returns:
        ``(items, classnames)`` with absolute image paths.
    """
    with open(split_file, encoding='utf-8') as f:
        data = json.load(f)
    if not isinstance(data, dict) or split not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f'{split_file!r} has no {split!r} split (found {keys})')
    names: Dict[int, str] = {}
    for part, entries in data.items():
        for entry in entries:
            if not isinstance(entry, (list, tuple)) or len(entry) != 3:
                raise ValueError(f'{split_file!r} [{part!r}]: expected [path, label, classname], '
                                 f'got {entry!r}')
            _, label, classname = entry
            label, classname = int(label), clean_name(str(classname))
            if names.setdefault(label, classname) != classname:
                raise ValueError(f'{split_file!r}: label {label} is named both '
                                 f'{names[label]!r} and {classname!r}')
    missing = sorted(set(range(len(names))) - set(names))
    if missing:
        raise ValueError(f'{split_file!r}: labels are not 0..{len(names) - 1}; '
                         f'label {missing[0]} never occurs')
    items = [(os.path.join(image_dir, path), int(label)) for path, label, _ in data[split]]
    return items, [names[i] for i in range(len(names))]


def read_fgvc_aircraft(root: str, split: str = 'test') -> Tuple[List[Item], List[str]]:
    """Read FGVC-Aircraft as CoOp does: classes are the lines of ``variants.txt`` (in order),
    ``images_variant_<split>.txt`` holds ``<image id> <variant name>`` lines, and images are
    ``images/<image id>.jpg``. Variant names (``'707-320'``, ``'A300B4'``) are used unchanged."""
    with open(os.path.join(root, 'variants.txt'), encoding='utf-8') as f:
        classnames = [line.strip() for line in f if line.strip()]
    index = {name: i for i, name in enumerate(classnames)}
    list_file = os.path.join(root, f'images_variant_{split}.txt')
    items = []
    with open(list_file, encoding='utf-8') as f:
        for line_no, line in enumerate(f, 1):
            parts = line.strip().split(' ', 1)
            if not parts[0]:
                continue
            if len(parts) != 2 or parts[1] not in index:
                raise ValueError(f'{list_file}:{line_no}: expected "<id> <variant>" with a '
                                 f'variant of variants.txt, got {line.strip()!r}')
            items.append((os.path.join(root, 'images', parts[0] + '.jpg'), index[parts[1]]))
    return items, classnames


def image_folder_dataset(folder: str, name: Optional[str] = None,
                         transform: Optional[Callable] = None) -> ClassificationDataset:
    """A folder with one sub-folder of images per class; class names are the sub-folder names
    (sorted; ``'_'`` -> space).

    Raises:
        DatasetNotFound: if ``folder`` does not exist.
        ValueError: if it holds no class folders with images.
    """
    name = name or os.path.basename(os.path.normpath(folder))
    _require(name, folder)
    classes = list_class_folders(folder)
    items = [(os.path.join(folder, c, f), label) for label, c in enumerate(classes)
             for f in list_images(os.path.join(folder, c))]
    if not items:
        raise ValueError(f'{name}: no images in class sub-folders of {folder!r}')
    return ClassificationDataset(name, items, [clean_name(c) for c in classes], transform, folder)


def _wnid_folders(name: str, folder: str, wnids: Sequence[str],
                  classnames: Sequence[str]) -> ClassificationDataset:
    """Images in ``<folder>/<wnid>/``, labelled by the wnid's index in ``wnids``."""
    # folders only: not e.g. ImageNet-A/R's README.txt
    items, unknown = labelled_images(folder, {w: i for i, w in enumerate(wnids)})
    if unknown:
        logger.warning('%s: %d folders of %s are not among its %d classes and are skipped, '
                       'e.g. %s', name, len(unknown), folder, len(wnids), unknown[:3])
    if not items:
        raise ValueError(f'{name}: no images in <wnid> sub-folders of {folder!r}')
    return ClassificationDataset(name, items, classnames, None, folder)


def _first_existing(name: str, data_root: str, candidates: Sequence[str]) -> str:
    for rel in candidates:
        path = os.path.join(data_root, rel)
        if os.path.isdir(path):
            return path
    raise DatasetNotFound(name, os.path.join(data_root, candidates[0]))


@dataclass(frozen=True)
class CoopLayout:
    """Where a CoOp dataset lives under the data root.

    Attributes:
        folder: The dataset folder under the data root.
        image_dir: The image folder under ``folder`` that split paths are relative to
            (``''``: ``folder`` itself).
        split_file: CoOp's split JSON under ``folder``; None for FGVC-Aircraft's list files.
    """

    folder: str
    image_dir: str
    split_file: Optional[str]


#: CoOp's layouts (checked against KaiyangZhou/CoOp ``datasets/*.py``).
COOP_LAYOUTS: Dict[str, CoopLayout] = {
    'Caltech101': CoopLayout('caltech-101', '101_ObjectCategories', 'split_zhou_Caltech101.json'),
    'OxfordPets': CoopLayout('oxford_pets', 'images', 'split_zhou_OxfordPets.json'),
    'StanfordCars': CoopLayout('stanford_cars', '', 'split_zhou_StanfordCars.json'),
    'Flowers102': CoopLayout('oxford_flowers', 'jpg', 'split_zhou_OxfordFlowers.json'),
    'Food101': CoopLayout('food-101', 'images', 'split_zhou_Food101.json'),
    'FGVCAircraft': CoopLayout('fgvc_aircraft', 'images', None),
    'SUN397': CoopLayout('sun397', 'SUN397', 'split_zhou_SUN397.json'),
    'DTD': CoopLayout('dtd', 'images', 'split_zhou_DescribableTextures.json'),
    'EuroSAT': CoopLayout('eurosat', '2750', 'split_zhou_EuroSAT.json'),
    'UCF101': CoopLayout('ucf101', 'UCF-101-midframes', 'split_zhou_UCF101.json'),
}
#: POMP's cross-dataset targets (Table 2 order); the table's mean is taken over these.
CROSS_DATASETS: Tuple[str, ...] = tuple(COOP_LAYOUTS)
#: ImageNet-1K val, its domain-shift variants and the ImageNet-21K held-out split.
IMAGENET_DATASETS: Tuple[str, ...] = ('ImageNet', 'ImageNetV2', 'ImageNet-Sketch', 'ImageNet-A',
                                      'ImageNet-R', 'ImageNet-21K')
ALL_DATASETS: Tuple[str, ...] = IMAGENET_DATASETS[-1:] + IMAGENET_DATASETS[:1] + \
    CROSS_DATASETS + IMAGENET_DATASETS[1:-1]
_GROUPS: Dict[str, Tuple[str, ...]] = {
    'all': ALL_DATASETS,
    'cross': CROSS_DATASETS,
    'imagenet-variants': IMAGENET_DATASETS[1:-1],
    'none': (),  # only the --folder sets
}


def _coop(name: str, data_root: str) -> ClassificationDataset:
    layout = COOP_LAYOUTS[name]
    root = _require(name, os.path.join(data_root, layout.folder))
    image_dir = _require(name, os.path.join(root, layout.image_dir) if layout.image_dir
                         else root)
    if layout.split_file is None:
        for f in ('variants.txt', 'images_variant_test.txt'):
            _require(name, os.path.join(root, f), 'file')
        items, classnames = read_fgvc_aircraft(root)
    else:
        split_file = _require(name, os.path.join(root, layout.split_file), 'file')
        items, classnames = read_coop_split(split_file, image_dir)
    if not items:
        raise ValueError(f'{name}: the test split of {root!r} is empty')
    return ClassificationDataset(name, items, classnames, None, root)


def _imagenet_subset(synset_file: Optional[str]) -> Tuple[List[str], List[str]]:
    """(wnids, names) of ImageNet-1K, or of the subset listed in a timm synset file."""
    vocab = load_vocabulary('imagenet1k')
    if synset_file is None:
        return list(vocab.ids), list(vocab.names)
    data = pkgutil.get_data('timm.data', f'_info/{synset_file}')
    if data is None:
        raise FileNotFoundError(f'timm does not ship _info/{synset_file}; upgrade timm')
    names = dict(zip(vocab.ids, vocab.names))
    wnids = [w.strip() for w in data.decode('utf-8').split() if w.strip()]
    return wnids, [names[w] for w in wnids]


def _imagenet_wnid(name: str, candidates: Sequence[str], synset_file: Optional[str] = None):
    def build(data_root: str) -> ClassificationDataset:
        folder = _first_existing(name, data_root, candidates)
        wnids, names = _imagenet_subset(synset_file)
        return _wnid_folders(name, folder, wnids, names)
    return build


def _imagenet_v2(data_root: str) -> ClassificationDataset:
    name = 'ImageNetV2'
    folder = _first_existing(name, data_root, (
        'imagenetv2/imagenetv2-matched-frequency-format-val',
        'imagenetv2-matched-frequency-format-val'))
    _, names = _imagenet_subset(None)
    # Folders are named by class index (0..999) in the standard (sorted-wnid) order.
    return _wnid_folders(name, folder, [str(i) for i in range(len(names))], names)


def _imagenet21k(data_root: str) -> ClassificationDataset:
    from ..pretrain.data import ImageNet21K
    name = 'ImageNet-21K'
    winter = os.path.join(data_root, 'imagenet21k_resized')
    fall = os.path.join(data_root, 'imagenet21k')
    if os.path.isdir(os.path.join(winter, 'imagenet21k_val')):
        ds = ImageNet21K(winter, layout='winter21', split='val')
    elif os.path.isdir(fall):
        # fall11 has no val folder: hold out what the pre-training draw (16 shots, seed 1,
        # the configs' setting) did not take.
        ds = ImageNet21K(fall, layout='fall11', split='val', shots=16, seed=1)
    else:
        raise DatasetNotFound(name, os.path.join(winter, 'imagenet21k_val'))
    logger.info('%s: %s layout at %s, %d classes', name, ds.layout, ds.data_root,
                len(ds.vocabulary))
    return ClassificationDataset(name, ds.items, ds.vocabulary.names, None, ds.data_root)


_BUILDERS: Dict[str, Callable[[str], ClassificationDataset]] = {
    **{name: (lambda root, _n=name: _coop(_n, root)) for name in CROSS_DATASETS},
    'ImageNet': _imagenet_wnid('ImageNet', ('imagenet/images/val', 'imagenet/val')),
    'ImageNetV2': _imagenet_v2,
    'ImageNet-Sketch': _imagenet_wnid('ImageNet-Sketch', (
        'imagenet-sketch/images', 'imagenet-sketch/sketch', 'sketch')),
    'ImageNet-A': _imagenet_wnid('ImageNet-A', ('imagenet-adversarial/imagenet-a', 'imagenet-a'),
                                 'imagenet_a_synsets.txt'),
    'ImageNet-R': _imagenet_wnid('ImageNet-R', ('imagenet-rendition/imagenet-r', 'imagenet-r'),
                                 'imagenet_r_synsets.txt'),
    'ImageNet-21K': _imagenet21k,
}


def _key(name: str) -> str:
    return name.lower().replace('-', '').replace('_', '').replace(' ', '')


def resolve_dataset_names(names: Sequence[str]) -> List[str]:
    """Canonical dataset names, in order, without repeats.

    Matching ignores case, ``'-'`` and ``'_'``; the groups ``'all'``, ``'cross'`` (the 10
    cross-dataset targets) and ``'imagenet-variants'`` (V2, Sketch, A, R) expand, ``'none'``
    to nothing (evaluate only folders).

    Raises:
        ValueError: for an unknown name.
    """
    lookup = {_key(n): (n,) for n in ALL_DATASETS}
    lookup.update({_key(g): members for g, members in _GROUPS.items()})
    out: List[str] = []
    for name in names:
        if _key(name) not in lookup:
            raise ValueError(f'unknown dataset {name!r}; known: {", ".join(ALL_DATASETS)} '
                             f'and the groups {", ".join(_GROUPS)}')
        out.extend(n for n in lookup[_key(name)] if n not in out)
    return out


def build_dataset(name: str, data_root: str,
                  transform: Optional[Callable] = None) -> ClassificationDataset:
    """Read a dataset by name (see :data:`ALL_DATASETS`) from its CoOp folder under
    ``data_root``.

    Folders per dataset: CoOp's (``oxford_pets/``, ``caltech-101/``, ...; see
    :data:`COOP_LAYOUTS`), ``imagenet/images/val`` (or ``imagenet/val``),
    ``imagenetv2/imagenetv2-matched-frequency-format-val``, ``imagenet-sketch/images`` (or
    ``.../sketch``), ``imagenet-adversarial/imagenet-a``, ``imagenet-rendition/imagenet-r``, and
    for ImageNet-21K ``imagenet21k_resized/imagenet21k_val`` (winter21) or ``imagenet21k/``
    (fall11, held out from the 16-shot seed-1 pre-training draw).

    Raises:
        DatasetNotFound: if a folder or file the dataset needs is missing.
        ValueError: for an unknown name or malformed split files.
    """
    matches = [n for n in ALL_DATASETS if _key(n) == _key(name)]
    if not matches:
        raise ValueError(f'unknown dataset {name!r}; known: {", ".join(ALL_DATASETS)}')
    ds = _BUILDERS[matches[0]](data_root)
    return ds.with_transform(transform) if transform is not None else ds
