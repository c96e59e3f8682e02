"""Small data generators shared by the tests (tiny images in temporary folders)."""
import os

import numpy as np


def write_image_folder(folder, classes, per_class, size=32, seed=0, corrupt=()):
    """One sub-folder of random JPEGs per class; ``(class, i)`` in ``corrupt`` gets bytes that
    no decoder can read."""
    from PIL import Image
    rng = np.random.RandomState(seed)
    for c in classes:
        os.makedirs(os.path.join(folder, c), exist_ok=True)
        for i in range(per_class):
            path = os.path.join(folder, c, f'{i}.jpg')
            if (c, i) in corrupt:
                with open(path, 'wb') as f:
                    f.write(b'\xff\xd8\xff\xe0 not a jpeg')
                continue
            Image.fromarray(rng.randint(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
