import json
import os

import numpy as np
import pytest

from pomp_mm.pretrain.data import ImageList, ImageNet21K, collate_views, few_shot_split
from pomp_mm.vocabulary import load_vocabulary


def _img(path, seed=0, size=24):
    from PIL import Image
    arr = np.random.RandomState(seed).randint(0, 255, (size, size, 3), dtype=np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture(scope='module')
def wnids():
    return list(load_vocabulary('imagenet21k-p').ids[:3])


def test_winter21_layout_few_shot_split_reused(tmp_path, wnids):
    root = tmp_path / 'in21k'
    for split, count in (('train', 5), ('val', 2)):
        for w in wnids:
            for i in range(count):
                _img(str(root / f'imagenet21k_{split}' / w / f'{i}.JPEG'), i)
    (root / 'imagenet21k_train' / 'n99999999').mkdir()  # not a class: skipped, logged
    split_file = str(tmp_path / 'split.json')
    ds = ImageNet21K(str(root), layout='winter21', shots=2, seed=1, split_file=split_file,
                     num_views=3, image_size=16)
    vocab = load_vocabulary('imagenet21k-p')
    assert len(ds) == 6 and len(ds.vocabulary) == 10450
    assert sorted({label for _, label in ds.items}) == [vocab.ids.index(w) for w in wnids]
    assert ds.class_counts[vocab.ids.index(wnids[0])] == 2
    sample = ds[0]
    assert sample['inputs'].shape == (3, 3, 16, 16)
    # the split file is reused: new images on disk do not change the split
    saved = json.load(open(split_file))
    _img(str(root / 'imagenet21k_train' / wnids[0] / 'new.JPEG'))
    again = ImageNet21K(str(root), layout='winter21', shots=2, seed=1, split_file=split_file)
    assert again.items == ds.items == [tuple(x) for x in saved['items']]
    with pytest.raises(ValueError, match='was made with'):
        ImageNet21K(str(root), layout='winter21', shots=4, seed=1, split_file=split_file)
    val = ImageNet21K(str(root), layout='winter21', split='val')
    assert len(val) == 6


def test_fall11_layout_held_out_split(tmp_path):
    root = tmp_path / 'fall11'
    wnids = list(load_vocabulary('imagenet21k').ids[100:102])
    for w in wnids:
        for i in range(4):
            _img(str(root / w / f'{w}_{i}.JPEG'), i)
    train = ImageNet21K(str(root), shots=3, seed=0)
    val = ImageNet21K(str(root), split='val', shots=3, seed=0)
    assert len(train) == 6 and len(val) == 2
    assert not {p for p, _ in train.items} & {p for p, _ in val.items}
    with pytest.raises(ValueError, match='held-out split needs shots'):
        ImageNet21K(str(root), split='val', shots=None)
    with pytest.raises(FileNotFoundError, match='nowhere'):
        ImageNet21K(str(tmp_path / 'nowhere'))


def test_few_shot_split_is_seeded():
    items = [(f'{c}/{i}.jpg', c) for c in range(3) for i in range(10)]
    a, b, c = few_shot_split(items, 4, 0), few_shot_split(items, 4, 0), few_shot_split(items, 4, 1)
    assert a == b != c
    assert [sum(1 for _, label in a if label == k) for k in range(3)] == [4, 4, 4]


def test_image_list_csv_and_unreadable_images(tmp_path):
    _img(str(tmp_path / 'a.jpg'))
    _img(str(tmp_path / 'sub' / 'b.png'), 1)
    (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8\xff truncated')
    csv = tmp_path / 'list.csv'
    csv.write_text('path,class\na.jpg,dog\nsub/b.png,1\nbroken.jpg,cat\n')
    ds = ImageList(str(csv), vocabulary=['cat', 'dog'], image_size=16, num_views=2)
    assert [label for _, label in ds.items] == [1, 1, 0]
    batch = collate_views([ds[i] for i in range(3)])
    assert batch['skipped'] == 1
    assert batch['inputs'].shape == (2, 2, 3, 16, 16)
    assert batch['labels'].tolist() == [1, 1]
    assert collate_views([None]) == {'skipped': 1}
    bad = tmp_path / 'bad.csv'
    bad.write_text('a.jpg,horse\n')
    with pytest.raises(ValueError, match=r"bad.csv:1: class 'horse' is not in the vocabulary"):
        ImageList(str(bad), vocabulary=['cat', 'dog'])


def _wide_image(w=60, h=30):
    from PIL import Image
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, : w // 2] = (200, 30, 30)  # left half red, right half blue: crops are visible
    arr[:, w // 2:] = (30, 30, 200)
    arr[::2, ::3] = (90, 160, 20)
    return Image.fromarray(arr)


@pytest.mark.parametrize('tag', [('ViT-B-16', 'openai'), ('ViT-B-16-SigLIP', 'webli')])
def test_eval_transform_follows_the_open_clip_preprocess_cfg(tag):
    """Evaluation preprocessing equals open_clip's own for the model's settings; OpenAI's
    ViT-B-16 is the default (unchanged), SigLIP's squash + mean/std 0.5 are not."""
    import open_clip
    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from pomp_mm.pretrain.data import build_transform
    cfg = open_clip.get_pretrained_cfg(*tag)
    ref = image_transform_v2(PreprocessCfg(size=32, **{
        k: cfg[k] for k in ('mean', 'std', 'interpolation', 'resize_mode')}), is_train=False)
    img = _wide_image()
    ours = build_transform(False, 32, preprocess=cfg)(img)
    torch.testing.assert_close(ours, ref(img), atol=0, rtol=0)
    default = build_transform(False, 32)(img)
    assert torch.equal(default, ours) == (tag[1] == 'openai')


def test_preprocess_from_a_dataset_config_and_validation():
    import torch
    from mmengine.registry import DATASETS

    from pomp_mm.pretrain.data import build_transform, resolve_preprocess
    from PIL import Image
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        _wide_image(24, 24).save(os.path.join(root, 'a.png'))
        with open(os.path.join(root, 'list.csv'), 'w') as f:
            f.write('a.png,cat\n')
        ds = DATASETS.build(dict(type='ImageList', source=os.path.join(root, 'list.csv'),
                                 vocabulary=['cat'], image_size=24, train=False,
                                 preprocess=dict(mean=[0.5] * 3, std=[0.25] * 3)))
        x = ds[0]['inputs'][0]
        raw = torch.from_numpy(np.array(Image.open(os.path.join(root, 'a.png')))).float()
    torch.testing.assert_close(x, (raw.permute(2, 0, 1) / 255 - 0.5) / 0.25)
    assert ds.preprocess['mean'] == (0.5, 0.5, 0.5) and ds.preprocess['resize_mode'] == 'shortest'
    # 'longest': the whole image, padded to a square with fill_color
    out = build_transform(False, 30, preprocess=dict(resize_mode='longest', mean=0.0, std=1.0))
    y = out(_wide_image(60, 30))
    assert y.shape == (3, 30, 30) and torch.all(y[:, :7] == 0) and torch.all(y[:, -7:] == 0)
    assert y[0, 15, 1] > 2 * y[2, 15, 1] and y[2, 15, -2] > 2 * y[0, 15, -2]  # both halves kept
    with pytest.raises(ValueError, match="resize_mode must be one of .* got 'crop'"):
        resolve_preprocess(dict(resize_mode='crop'))
    with pytest.raises(ValueError, match=r'std must be 3 values \(std > 0\), got \[1, 0, 1\]'):
        resolve_preprocess(dict(std=[1, 0, 1]))


def test_dassl_randaugment_ops_list():
    """Dassl's randaugment_list2: 15 ops, this order, these magnitude ranges."""
    from pomp_mm.pretrain.randaugment import RANDAUGMENT2_OPS
    assert RANDAUGMENT2_OPS == [
        ('AutoContrast', 0, 1), ('Brightness', 0.1, 1.9), ('Color', 0.1, 1.9),
        ('Contrast', 0.1, 1.9), ('Equalize', 0, 1), ('Identity', 0, 1), ('Invert', 0, 1),
        ('Posterize', 4, 8), ('Rotate', -30, 30), ('Sharpness', 0.1, 1.9), ('ShearX', -0.3, 0.3),
        ('ShearY', -0.3, 0.3), ('Solarize', 0, 256), ('TranslateX', -0.3, 0.3),
        ('TranslateY', -0.3, 0.3)]


def test_dassl_randaugment_draws_seeding_and_identity():
    import torch

    from pomp_mm.pretrain.randaugment import RANDAUGMENT2_OPS, DasslRandAugment
    ranges = {name: (lo, hi) for name, lo, hi in RANDAUGMENT2_OPS}
    aug = DasslRandAugment(n=2, p=0.6)
    torch.manual_seed(0)
    plans = [aug.plan() for _ in range(3000)]
    applied = [len(p) for p in plans]
    assert sum(applied) / len(applied) == pytest.approx(2 * 0.6, abs=0.05)  # each op w.p. p
    names = [name for p in plans for name, _ in p]
    assert set(names) == set(ranges)  # every op is reachable, roughly uniformly
    assert max(names.count(k) for k in ranges) < 1.5 * min(names.count(k) for k in ranges)
    geometric = {'Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY'}
    for name, value in (x for p in plans for x in p):
        lo, hi = ranges[name]
        # only the geometric ops flip the sign (their ranges are symmetric already)
        assert lo <= value <= hi if name not in geometric else -hi <= value <= hi
    flips = [v for p in plans for n, v in p if n == 'ShearX']
    assert min(flips) < -0.25 and max(flips) > 0.25
    rot = [v for p in plans for n, v in p if n == 'Rotate']
    assert min(rot) < -25 and max(rot) > 25  # uniform over the whole range, not one magnitude
    # seeded: the same images for the same seed, others for another
    img = _wide_image(32, 32)
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append([np.asarray(aug(img)) for _ in range(6)])
    assert all(np.array_equal(a, b) for a, b in zip(outs[0], outs[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(outs[0], outs[2]))
    # p = 0: identity; p = 1 with a forced op: the PIL operation at the drawn magnitude
    never = DasslRandAugment(n=4, p=0.0)
    assert all(never(img) is img for _ in range(50))
    with pytest.raises(ValueError, match=r'p must be in \[0, 1\], got 1.5'):
        DasslRandAugment(p=1.5)


def test_build_transform_randaugment_choice(monkeypatch):
    from PIL import ImageOps
    from torchvision import transforms as T

    from pomp_mm.pretrain import randaugment
    from pomp_mm.pretrain.data import build_transform
    ops = build_transform(True, 16).transforms
    assert isinstance(ops[2], randaugment.DasslRandAugment) and ops[2].p == 0.6
    assert isinstance(build_transform(True, 16, randaugment='torchvision').transforms[2],
                      T.RandAugment)
    with pytest.raises(ValueError, match="randaugment must be one of .* got 'timm'"):
        build_transform(True, 16, randaugment='timm')
    always = randaugment.DasslRandAugment(n=1, p=1.0)
    monkeypatch.setattr(always, 'plan', lambda: [('Posterize', 5.7), ('Solarize', 100.0)])
    img = _wide_image(16, 16)
    want = ImageOps.solarize(ImageOps.posterize(img, 5), 100.0)
    assert np.array_equal(np.asarray(always(img)), np.asarray(want))


def _shared_name_wnids():
    from pomp_mm import load_vocabulary
    vocab = load_vocabulary('imagenet21k')
    seen = {}
    for i, name in enumerate(vocab.names):
        if name in seen:
            return vocab, name, seen[name], i
        seen[name] = i
    raise AssertionError('imagenet21k has no shared names?')


def test_image_folders_of_classes_sharing_a_name_keep_their_own_labels(tmp_path):
    """ImageNet-21K lemma collisions: each wnid folder trains its own class, not the first
    class of its display name."""
    from helpers import write_image_folder
    vocab, name, first, second = _shared_name_wnids()
    write_image_folder(str(tmp_path), [vocab.ids[first], vocab.ids[second]], 1, size=8)
    ds = ImageList(str(tmp_path), vocabulary='imagenet21k', image_size=8)
    labels = sorted(label for _, label in ds.items)
    assert labels == sorted([first, second]) and vocab.names[first] == vocab.names[second]


def test_csv_naming_a_shared_name_lists_the_candidates(tmp_path):
    vocab, name, first, second = _shared_name_wnids()
    csv_path = tmp_path / 'list.csv'
    csv_path.write_text(f'a.jpg,{vocab.ids[second]}\nb.jpg,{name}\n')
    with pytest.raises(ValueError, match=rf"list.csv:2: class '{name}' names '{name}', which "
                       rf"\d+ classes of vocabulary 'imagenet21k' share \(ids "
                       rf"'{vocab.ids[first]}', '{vocab.ids[second]}'"):
        ImageList(str(csv_path), vocabulary='imagenet21k')
    csv_path.write_text(f'a.jpg,{vocab.ids[second]}\n')
    assert ImageList(str(csv_path), vocabulary='imagenet21k').items[0][1] == second


def test_csv_class_index_must_be_inside_the_vocabulary(tmp_path):
    """Eight classes: index 7 is the last one, 8 is an error naming the row and the range."""
    names = [f'class {i}' for i in range(8)]
    csv_path = tmp_path / 'list.csv'
    csv_path.write_text('a.jpg,7\n')
    assert ImageList(str(csv_path), vocabulary=names).items[0][1] == 7
    csv_path.write_text('a.jpg,7\nb.jpg,8\n')
    with pytest.raises(ValueError, match=r"list.csv:2: class '8' is a class index outside "
                       r"\[0, 8\)"):
        ImageList(str(csv_path), vocabulary=names)


def test_folders_spelled_with_underscores_find_their_class(tmp_path):
    """A folder 'golden_retriever' is the vocabulary's 'golden retriever'."""
    from helpers import write_image_folder
    write_image_folder(str(tmp_path), ['golden_retriever', 'cat'], 1, size=8)
    ds = ImageList(str(tmp_path), vocabulary=['cat', 'dog', 'golden retriever'], image_size=8)
    assert sorted(label for _, label in ds.items) == [0, 2]
    own = ImageList(str(tmp_path), image_size=8)  # the folders themselves as the vocabulary
    assert list(own.vocabulary.names) == ['cat', 'golden retriever']


def test_pretraining_and_evaluation_list_the_same_images_of_a_folder(tmp_path):
    """One listing rule: hidden files and folders (macOS ``._x.jpg``, ``.ipynb_checkpoints``)
    are neither images nor classes for pre-training or evaluation; other extensions are not
    images; extensions are matched in any case."""
    from helpers import write_image_folder
    from pomp_mm.evaluation import image_folder_dataset
    write_image_folder(str(tmp_path), ['cat', 'dog'], 2, size=8)
    (tmp_path / 'cat' / '._0.jpg').write_bytes(b'AppleDouble')
    (tmp_path / 'dog' / 'notes.txt').write_text('not an image')
    os.rename(tmp_path / 'dog' / '1.jpg', tmp_path / 'dog' / '1.JPG')
    (tmp_path / '.ipynb_checkpoints').mkdir()
    (tmp_path / '.ipynb_checkpoints' / 'a.jpg').write_bytes(b'x')
    pre = ImageList(str(tmp_path), image_size=8)
    ev = image_folder_dataset(str(tmp_path))
    want = [(str(tmp_path / c / f), label) for label, c in enumerate(['cat', 'dog'])
            for f in (['0.jpg', '1.jpg'] if c == 'cat' else ['0.jpg', '1.JPG'])]
    assert sorted(pre.items) == want
    assert sorted(ev.items) == want
    assert list(pre.vocabulary.names) == ['cat', 'dog'] == list(ev.classnames)
