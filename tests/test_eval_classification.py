import csv
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pomp_mm.clip import clip_config
from pomp_mm.evaluation import (DatasetNotFound, accuracy, build_dataset, embed_images, evaluate,
                                image_folder_dataset, read_coop_split, resolve_dataset_names)
from pomp_mm.vocabulary import load_vocabulary
from helpers import run_repo_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PETS = ['Abyssinian', 'american_bulldog', 'basset_hound']  # as CoOp's JSON spells them
FOLDER_CLASSES = ['red_panda', 'tram']


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny models on a shared CPU: one thread avoids oversubscription (>10x faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _solid(path, i, size=40):
    """A solid-colour image: unlike noise, distinct colours get distinct predictions from the
    random tiny CLIP, so a mix-up of images, labels or class order changes the accuracy."""
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    colour = np.array([(i * 67) % 256, (i * 131) % 256, (i * 199) % 256], np.uint8)
    Image.fromarray(np.tile(colour, (size, size, 1))).save(path)


class Reference:
    """The tiny CLIP the tool builds (same seed), used by hand: open_clip's encode_image /
    encode_text, CLIP preprocessing, argmax."""

    def __init__(self):
        import open_clip

        from pomp_mm.clip import build_clip
        from pomp_mm.pretrain.data import build_transform
        torch.manual_seed(0)  # the tool's default --seed, set right before build_clip
        self.clip = build_clip('tiny')
        self.tok = open_clip.tokenizer.SimpleTokenizer()
        self.transform = build_transform(False, 32)

    @torch.no_grad()
    def images(self, paths):
        from PIL import Image
        x = torch.stack([self.transform(Image.open(p).convert('RGB')) for p in paths])
        return F.normalize(self.clip.encode_image(x), dim=-1)

    @torch.no_grad()
    def texts(self, texts):
        return F.normalize(self.clip.encode_text(self.tok(list(texts))), dim=-1)

    def hand(self, names):
        return self.texts(f'a photo of a {n}.' for n in names)


def _accuracy(img, labels, text):
    return 100.0 * float(((img @ text.t()).argmax(-1) == torch.as_tensor(labels)).float().mean())


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """A CoOp-format OxfordPets (3 classes, 9 test images), a folder-per-class dataset (2
    classes, 4 images) and a prompt checkpoint for the tiny CLIP.

    Labels are set from the hand-prompt predictions of the reference model, so the tool's
    hand-prompt accuracy is known by construction: OxfordPets 6 of 9 right (66.67), the folder
    dataset 3 of 4 (75.00).
    """
    from pomp_mm import save_prompt
    ref = Reference()
    tmp = tmp_path_factory.mktemp('eval')
    root = tmp / 'data'
    pets = root / 'oxford_pets'
    paths = [str(pets / 'images' / f'img_{i}.png') for i in range(9)]
    for i, p in enumerate(paths):
        _solid(p, i)
    names = [n.lower().replace('_', ' ') for n in PETS]
    pred = (ref.images(paths) @ ref.hand(names).t()).argmax(-1).tolist()
    labels = [c if i < 6 else (c + 1) % 3 for i, c in enumerate(pred)]
    test = [[f'img_{i}.png', label, PETS[label].lower()] for i, label in enumerate(labels)]
    # train/val entries name every class but point at files that do not exist: only 'test'
    # may be read
    split = {'train': [[f'missing_{c}.jpg', c, n.lower()] for c, n in enumerate(PETS)],
             'val': [], 'test': test}
    (pets / 'split_zhou_OxfordPets.json').write_text(json.dumps(split))

    folder = tmp / 'mine'
    tmp_paths = [str(tmp / 'scratch' / f'{i}.png') for i in range(4)]
    for i, p in enumerate(tmp_paths):
        _solid(p, 20 + i)
    fnames = [c.replace('_', ' ') for c in FOLDER_CLASSES]
    fpred = (ref.images(tmp_paths) @ ref.hand(fnames).t()).argmax(-1).tolist()
    folder_items = []
    for i, (p, c) in enumerate(zip(tmp_paths, fpred)):
        label = c if i < 3 else 1 - c
        dst = str(folder / FOLDER_CLASSES[label] / f'{i}.png')
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(p, dst)
        folder_items.append((dst, label))
    for c in FOLDER_CLASSES:  # both classes must exist as folders
        (folder / c).mkdir(exist_ok=True)
    torch.manual_seed(123)
    prompt = save_prompt(str(tmp / 'prompt.pth'), torch.randn(4, 64) * 0.02, clip_model='tiny')
    return {'tmp': tmp, 'root': str(root), 'folder': str(folder), 'prompt': prompt, 'ref': ref,
            'sets': {'OxfordPets': ([(p, label) for p, label in zip(paths, labels)], names),
                     'mine': (sorted(folder_items), fnames)},
            'pets_items': list(zip(paths, labels))}


@pytest.fixture(scope='module')
def reference(data):
    """Expected accuracies of every method, computed independently of the tool."""
    import open_clip

    from pomp_mm import PompTextEncoder
    ref = data['ref']
    templates = [t('{}') for t in open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES]
    prompt_enc = PompTextEncoder(clip_model='tiny', clip_module=ref.clip,
                                 prompt=data['prompt'], vocabulary=['x']).eval()
    out = {}
    for name, (items, names) in data['sets'].items():
        img = ref.images([p for p, _ in items])
        labels = [label for _, label in items]
        # one text-tower call for all templates x classes: same numbers, far fewer forwards
        per = ref.texts(t.format(n) for t in templates for n in names)
        ens = F.normalize(per.view(len(templates), len(names), -1).sum(0), dim=-1)
        with torch.no_grad():
            prompt_text = prompt_enc.encode_text(names)
        out[name] = {'hand prompt': _accuracy(img, labels, ref.hand(names)),
                     'template ensemble': _accuracy(img, labels, ens),
                     'prompt.pth': _accuracy(img, labels, prompt_text),
                     '_img': img, '_labels': labels, '_hand': ref.hand(names)}
    # by construction (see the data fixture)
    assert out['OxfordPets']['hand prompt'] == pytest.approx(600 / 9)
    assert out['mine']['hand prompt'] == pytest.approx(75.0)
    return out


def _run(*args):
    return run_repo_tool('eval_classification.py', *args, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))


def _read_csv(path):
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    return rows[0], {r[0]: r[1:] for r in rows[1:]}


@pytest.mark.slow
def test_cli_accuracies_match_hand_computed(data, reference):
    out = data['tmp'] / 'out'
    res = _run('--data-root', data['root'], '--datasets', 'OxfordPets', 'caltech101',
               '--folder', f'mine={data["folder"]}', '--clip-model', 'tiny', '--device', 'cpu',
               '--workers', '0', '--batch-size', '4', '--prompts', data['prompt'],
               '--out-dir', str(out))
    header, rows = _read_csv(out / 'results.csv')
    assert header == ['method', 'OxfordPets', 'mine', 'mean']
    assert list(rows) == ['hand prompt', 'template ensemble', 'prompt.pth']
    md = (out / 'results.md').read_text()
    assert md in res.stdout
    for method, values in rows.items():
        pets, mine, mean = (float(v) for v in values)
        assert pets == pytest.approx(reference['OxfordPets'][method], abs=1e-3)
        assert mine == pytest.approx(reference['mine'][method], abs=1e-3)
        assert mean == pytest.approx(pets, abs=1e-3)  # the folder set is not a cross-dataset
        expected = [reference['OxfordPets'][method], reference['mine'][method], pets]
        assert f'| {method} | ' + ' | '.join(f'{v:.2f}' for v in expected) + ' |' in md
    # the hand-prompt numbers fixed by construction, literally
    assert rows['hand prompt'][:2] == ['66.6667', '75.0000']
    missing = os.path.join(data['root'], 'caltech-101')
    assert f'Skipped (not found): Caltech101 (missing {missing})' in md
    assert 'Images: OxfordPets 9, mine 4.' in md


def _load_tool():
    from helpers import load_tool
    return load_tool('eval_classification')


def test_cli_config_json_and_max_images(data, reference, tmp_path):
    cfg = tmp_path / 'tiny.json'
    cfg.write_text(json.dumps(clip_config('tiny')))
    out = tmp_path / 'out'
    # in-process (the subprocess path is tested above); every other dataset of 'all' is
    # missing: skipped, and the run still succeeds
    rc = _load_tool().main(['--data-root', data['root'], '--clip-model', str(cfg),
                            '--device', 'cpu', '--workers', '0', '--no-ensemble',
                            '--max-images', '4', '--out-dir', str(out)])
    assert rc == 0
    header, rows = _read_csv(out / 'results.csv')
    assert header == ['method', 'OxfordPets', 'mean'] and list(rows) == ['hand prompt']
    ref = reference['OxfordPets']
    keep = [i * 9 // 4 for i in range(4)]  # the evenly spaced subset --max-images takes
    img, labels = ref['_img'][keep], torch.tensor(ref['_labels'])[keep]
    expected = _accuracy(img, labels, ref['_hand'])
    assert expected == 75.0  # images 0, 2, 4 are labelled right, image 6 wrong
    assert float(rows['hand prompt'][0]) == pytest.approx(expected, abs=1e-3)
    md = (out / 'results.md').read_text()
    for name in ('ImageNet', 'Caltech101', 'UCF101', 'ImageNet-21K', 'ImageNet-R'):
        assert f'{name} (missing ' in md


def test_sets_sharing_a_class_list_encode_its_text_once(data, reference, tmp_path,
                                                         monkeypatch):
    """A domain's renderings of the same classes: each method embeds the class list once,
    and both sets still get their own (here equal) accuracies."""
    from pomp_mm import PompTextEncoder
    calls = []
    encode = PompTextEncoder.encode_text

    def counted(self, names, *args, **kwargs):
        calls.append(tuple(names))
        return encode(self, names, *args, **kwargs)

    monkeypatch.setattr(PompTextEncoder, 'encode_text', counted)
    out = tmp_path / 'out'
    rc = _load_tool().main(['--datasets', 'none', '--folder', f'mine={data["folder"]}',
                            '--folder', f'again={data["folder"]}', '--clip-model', 'tiny',
                            '--device', 'cpu', '--workers', '0', '--prompts', data['prompt'],
                            '--out-dir', str(out)])
    assert rc == 0
    assert len(calls) == 3  # hand prompt, template ensemble, prompt.pth: once each
    header, rows = _read_csv(out / 'results.csv')
    assert header == ['method', 'mine', 'again', 'mean']
    for method, values in rows.items():
        assert float(values[0]) == float(values[1]) == \
            pytest.approx(reference['mine'][method], abs=1e-3)


def test_named_model_without_weights_is_refused(tmp_path):
    """A named open_clip model without --pretrained would be randomly initialised."""
    with pytest.raises(SystemExit, match=r"--clip-model 'ViT-B-16' needs --pretrained \(an "
                                         r"open_clip tag such as openai, or a weights file\)"):
        _load_tool().main(['--data-root', str(tmp_path), '--clip-model', 'ViT-B-16',
                           '--device', 'cpu', '--out-dir', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


def test_evaluate_api(data, reference):
    from pomp_mm import PompTextEncoder
    clip = data['ref'].clip
    ds = build_dataset('oxford_pets', data['root'])
    assert ds.classnames == ['abyssinian', 'american bulldog', 'basset hound']
    assert ds.items == data['pets_items']
    enc = PompTextEncoder(clip_model='tiny', clip_module=clip, vocabulary=['x'],
                          templates='single', cat_bg=False).eval()
    expected = reference['OxfordPets']['hand prompt']
    assert evaluate(enc, clip.visual, ds, batch_size=2, progress=False) == pytest.approx(expected)
    with torch.no_grad():
        text = enc.encode_text(ds.classnames)
    assert evaluate(text, clip.visual, ds, progress=False) == pytest.approx(expected)
    feats, labels = embed_images(clip.visual, ds, progress=False)
    assert accuracy(feats, labels, text) == pytest.approx(expected)
    with pytest.raises(ValueError, match='2 class embeddings for 3 classes'):
        evaluate(text[:2], clip.visual, ds, progress=False)


def test_layout_readers(tmp_path):
    root = tmp_path
    # FGVC-Aircraft: variants.txt + '<id> <variant>' list, images/<id>.jpg
    air = root / 'fgvc_aircraft'
    (air / 'images').mkdir(parents=True)
    (air / 'variants.txt').write_text('707-320\nA300B4\nBoeing 717\n')
    (air / 'images_variant_test.txt').write_text('0001 A300B4\n0002 Boeing 717\n')
    ds = build_dataset('FGVCAircraft', str(root))
    assert ds.classnames == ['707-320', 'A300B4', 'Boeing 717']
    assert ds.items == [(str(air / 'images' / '0001.jpg'), 1),
                        (str(air / 'images' / '0002.jpg'), 2)]
    # StanfordCars: split paths are relative to the dataset folder itself
    cars = root / 'stanford_cars'
    cars.mkdir()
    (cars / 'split_zhou_StanfordCars.json').write_text(json.dumps(
        {'train': [], 'val': [], 'test': [['cars_test/00001.jpg', 0, '2012 Audi_S4']]}))
    ds = build_dataset('StanfordCars', str(root))
    assert ds.items == [(str(cars / 'cars_test' / '00001.jpg'), 0)]
    assert ds.classnames == ['2012 Audi S4']
    # ImageNet-A: wnid folders of a 200-class subset, README.txt ignored
    synsets = load_vocabulary('imagenet1k')
    ina = root / 'imagenet-adversarial' / 'imagenet-a'
    a_wnid = 'n01498041'  # the first ImageNet-A class
    _solid(str(ina / a_wnid / 'x.jpg'), 0, 8)
    (ina / 'README.txt').write_text('readme')
    ds = build_dataset('imagenet-a', str(root))
    assert len(ds.classnames) == 200 and ds.items == [(str(ina / a_wnid / 'x.jpg'), 0)]
    assert ds.classnames[0] == synsets.names[synsets.ids.index(a_wnid)]
    # ImageNet-V2: folders named by class index
    v2 = root / 'imagenetv2' / 'imagenetv2-matched-frequency-format-val'
    _solid(str(v2 / '7' / 'y.jpeg'), 1, 8)
    ds = build_dataset('ImageNetV2', str(root))
    assert ds.items == [(str(v2 / '7' / 'y.jpeg'), 7)] and ds.classnames[7] == synsets.names[7]
    # missing datasets name the missing path
    with pytest.raises(DatasetNotFound) as err:
        build_dataset('DTD', str(root))
    assert err.value.path == str(root / 'dtd')
    (root / 'dtd' / 'images').mkdir(parents=True)
    with pytest.raises(DatasetNotFound, match='split_zhou_DescribableTextures.json'):
        build_dataset('DTD', str(root))
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        resolve_dataset_names(['cifar'])
    assert resolve_dataset_names(['cross', 'dtd'])[-1] == 'UCF101'
    with pytest.raises(DatasetNotFound):
        image_folder_dataset(str(root / 'nope'))


def test_coop_split_errors(tmp_path):
    bad = tmp_path / 'split.json'
    bad.write_text(json.dumps({'test': [['a.jpg', 0, 'cat'], ['b.jpg', 0, 'dog']]}))
    with pytest.raises(ValueError, match="label 0 is named both 'cat' and 'dog'"):
        read_coop_split(str(bad), str(tmp_path))
    bad.write_text(json.dumps({'test': [['a.jpg', 1, 'cat']]}))
    with pytest.raises(ValueError, match='label 0 never occurs'):
        read_coop_split(str(bad), str(tmp_path))
    bad.write_text(json.dumps({'train': []}))
    with pytest.raises(ValueError, match="no 'test' split"):
        read_coop_split(str(bad), str(tmp_path))


class _MeanColourTower(torch.nn.Module):
    """Stands in for an image tower: its features are the input's per-channel means."""

    def __init__(self, preprocess_cfg=None):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.image_size = 16
        if preprocess_cfg is not None:
            self.preprocess_cfg = preprocess_cfg

    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_embed_images_uses_the_towers_preprocessing(tmp_path):
    """Without a dataset transform, the tower's open_clip preprocess_cfg decides mean/std (a
    SigLIP-like 0.5 here); a tower without one gets OpenAI CLIP's normalisation."""
    from PIL import Image

    from pomp_mm.evaluation import image_folder_dataset
    from pomp_mm.pretrain.data import CLIP_MEAN, CLIP_STD
    colour = (200, 100, 30)
    (tmp_path / 'set' / 'a').mkdir(parents=True)
    Image.new('RGB', (20, 20), colour).save(tmp_path / 'set' / 'a' / '0.png')
    ds = image_folder_dataset(str(tmp_path / 'set'))
    rgb = torch.tensor(colour, dtype=torch.float32) / 255
    for cfg, mean, std in ((dict(mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode='squash',
                                 interpolation='bicubic'), 0.5, 0.5),
                           (None, torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD))):
        feats, _ = embed_images(_MeanColourTower(cfg), ds, progress=False)
        torch.testing.assert_close(feats[0], F.normalize((rgb - mean) / std, dim=0))
