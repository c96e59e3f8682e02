import os

import pytest
import torch

from helpers import IMAGE_CLASSES, write_image_folder

# Under pytest-xdist (make test runs `-n 2 --dist loadfile`) each worker gets its share of the
# cores, for torch here and for the tools the tests start (OMP_NUM_THREADS is inherited): two
# workers at two threads each on two cores would fight over them.
if os.environ.get('PYTEST_XDIST_WORKER'):
    _THREADS = max(1, (os.cpu_count() or 1) // int(os.environ['PYTEST_XDIST_WORKER_COUNT']))
    os.environ['OMP_NUM_THREADS'] = str(_THREADS)
    torch.set_num_threads(_THREADS)

#: the modules that take longest, longest first (`--durations`, 2026-12-08: 363, 163, 119, 100,
#: 74, 54, 43, 42, 21 s). They start first, so that under `--dist loadfile` (one module per
#: worker at a time) the short ones fill the gaps at the end instead of a long one running alone.
HEAVY_MODULES = ('test_synthetic_ov_det.py', 'test_synthetic_pomp.py', 'test_synthetic_ov.py',
                 'test_varlen.py', 'test_pretrain.py', 'test_preemption.py',
                 'test_world_clip_v3.py', 'test_mmdet_ov.py', 'test_mmseg_voc.py')


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept


@pytest.fixture
def make_encoder():
    """Build a PompTextEncoder on the tiny CLIP; same seed -> same CLIP weights."""
    from pomp_mm import PompTextEncoder

    def make(seed: int = 0, **kwargs):
        kwargs.setdefault('vocabulary', ['cat', 'dog'])
        torch.manual_seed(seed)
        return PompTextEncoder(clip_model='tiny', **kwargs).eval()

    return make


@pytest.fixture
def reference_clip():
    """The open_clip model PompTextEncoder builds for a seed, and the CLIP tokenizer."""
    import open_clip

    from pomp_mm.clip import build_clip

    def make(seed: int = 0):
        torch.manual_seed(seed)
        return build_clip('tiny'), open_clip.tokenizer.SimpleTokenizer()

    return make


@pytest.fixture
def image_folder(tmp_path):
    """An image folder of :data:`IMAGE_CLASSES`, 3 random 40 px JPEGs each; ('lamp', 1) is
    unreadable."""
    folder = str(tmp_path / 'images')
    write_image_folder(folder, IMAGE_CLASSES, 3, size=40, corrupt={('lamp', 1)})
    return folder


@pytest.fixture(scope='module')
def small_image_folder(tmp_path_factory):
    """One per test module: 2 random 32 px JPEGs per class; ('car', 1) is unreadable (index 3
    of a dataset over the sorted folders)."""
    folder = str(tmp_path_factory.mktemp('small_images') / 'images')
    write_image_folder(folder, IMAGE_CLASSES, 2, corrupt={('car', 1)})
    return folder


@pytest.fixture(scope='session')
def hf_clip_folder(tmp_path_factory):
    """A tiny random Hugging Face CLIPModel and CLIP tokenizer saved once per session (no
    download): ``'transformers:' + hf_clip_folder`` is a pomp_mm model spec."""
    pytest.importorskip('transformers')
    from pomp_mm.testing import tiny_hf_clip
    return tiny_hf_clip(str(tmp_path_factory.mktemp('hf_clip')))


@pytest.fixture(scope='session')
def siglip_tokenizer_folder(tmp_path_factory):
    """A tiny SigLIP-style (sentencepiece unigram, ``</s>`` appended, no start token) Hugging
    Face tokenizer saved once per session (pomp_mm.testing.write_siglip_tokenizer)."""
    pytest.importorskip('transformers')
    from pomp_mm.testing import write_siglip_tokenizer
    return write_siglip_tokenizer(str(tmp_path_factory.mktemp('siglip_tokenizer')))


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    """The synthetic world's scene set of the open-vocabulary tests: 400 training and 100
    validation scenes (built once per module that asks)."""
    from pomp_mm.synthetic.scenes import write_scene_set
    root = str(tmp_path_factory.mktemp('scenes'))
    write_scene_set(root, 'train', 400, 101, progress=False)
    write_scene_set(root, 'val', 100, 102, progress=False)
    return root
