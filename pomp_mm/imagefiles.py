"""Which files and folders are images and classes: one rule for evaluation and pre-training
data. Hidden entries (``.DS_Store``, ``._x.jpg`` from macOS copies, ``.ipynb_checkpoints``)
are never images or classes."""
from __future__ import annotations

import os
from typing import List, Mapping, Tuple

__all__ = ['IMAGE_EXTENSIONS', 'list_images', 'list_class_folders', 'labelled_images']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def list_images(folder: str) -> List[str]:
    """Sorted names of the image files directly in ``folder`` (by extension, any case)."""
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))


def list_class_folders(folder: str) -> List[str]:
    """Sorted names of the sub-folders of ``folder``: the classes of an image-folder dataset."""
    return sorted(d for d in os.listdir(folder)
                  if not d.startswith('.') and os.path.isdir(os.path.join(folder, d)))


def labelled_images(folder: str, index: Mapping[str, int]
                    ) -> Tuple[List[Tuple[str, int]], List[str]]:
    """``(path, label)`` of the images in ``folder/<class>/`` for every class folder named in
    ``index`` (class folder name -> label), and the class folders it does not name."""
    items, unknown = [], []
    for name in list_class_folders(folder):
        if name not in index:
            unknown.append(name)
            continue
        sub = os.path.join(folder, name)
        items.extend((os.path.join(sub, f), index[name]) for f in list_images(sub))
    return items, unknown
