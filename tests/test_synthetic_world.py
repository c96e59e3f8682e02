"""The synthetic world: classes, renderer determinism and labels, writers, bad input."""
import hashlib
import os

import numpy as np
import pytest

from pomp_mm.synthetic import protocol, world
from pomp_mm.synthetic.datasets import (eval_image, pretrain_image_index, render_eval_set,
                                        write_eval_set, write_pretrain_set)
from pomp_mm.synthetic.render import (DOMAINS, SceneObject, _secondary, render_object,
                                      render_scene)
from pomp_mm.synthetic.world import COLOURS, WorldClass, all_classes, class_at, parse_class


def _sha(image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()[:16]


def test_vocabulary_is_24k_unique_and_indexable():
    classes = all_classes()
    assert len(classes) == world.NUM_CLASSES == 24000
    assert len({c.name for c in classes}) == 24000
    for i in (0, 1, 5, 4321, 23999):
        assert class_at(i) == classes[i] and classes[i].index == i
        assert parse_class(classes[i].name) == classes[i] == parse_class(classes[i].id)
    assert classes[0].name == 'plain red circle on sand'


def test_builtin_vocabularies():
    from pomp_mm import load_vocabulary
    full = load_vocabulary('synthetic-24k')
    pre = load_vocabulary('synthetic-pretrain')
    coop = load_vocabulary('synthetic-1k')
    held = {c.name for c in protocol.heldout_classes()}
    assert (len(full), len(pre), len(coop), len(held)) == (24000, 23900, 1000, 100)
    assert not held & set(pre.names) and not held & set(coop.names)
    assert set(coop.names) <= set(pre.names)
    assert full.ids[0] == 'plain_red_circle_on_sand'


def test_render_is_deterministic_and_pinned():
    cls = WorldClass('striped', 'red', 'star', 'sand')
    a, b = render_object(cls, 3, 17), render_object(cls, 3, 17)
    assert a.size == (64, 64) and _sha(a) == _sha(b)
    assert _sha(render_object(cls, 3, 18)) != _sha(a)
    assert _sha(render_object(cls, 4, 17)) != _sha(a)
    # pinned bytes: a change to the renderer (or to numpy/Pillow's streams) changes every
    # dataset and invalidates the committed CLIP's recorded accuracies
    assert {d: _sha(render_object(cls, 0, 0, 64, d)) for d in DOMAINS} == PINNED


PINNED = {'photo': '951226fcfe37d736', 'sketch': '26293d6d64f36d73', 'noisy': 'b3f209b07609c3d0'}


def test_eval_images_are_deterministic_and_labelled():
    s = protocol.eval_sets()['colour-shape']
    assert _sha(eval_image(s, 7, 2)) == _sha(eval_image(s, 7, 2))
    images, labels = render_eval_set(s, per_class=2)
    assert len(images) == 800 and labels[:4] == [0, 0, 1, 1]  # v3: all 400 pairs


def _scene(noise=0.0):
    objs = [SceneObject('plain', 'red', 'square'), SceneObject('striped', 'blue', 'circle'),
            SceneObject('plain', 'yellow', 'star'), SceneObject('checkered', 'green', 'heart')]
    return objs, render_scene(objs, 'snow', 5, 9, 96, clutter=False, noise=noise,
                              min_radius=0.15, max_radius=0.3)


def test_scene_labels_match_the_drawn_pixels():
    objs, scene = _scene()
    empty = render_scene([], 'snow', 5, 9, 96, clutter=False, noise=0.0)
    img, bg = scene.image.astype(int), empty.image.astype(int)
    labels = scene.labels
    # background pixels are exactly the empty scene; every changed pixel belongs to an object
    assert (img[labels == 0] == bg[labels == 0]).all()
    assert (labels[(img != bg).any(-1)] > 0).all()
    for i, obj in enumerate(objs):
        mine = labels == i + 1
        assert mine.sum() == scene.areas[i] > 20
        rgb = np.array(COLOURS[obj.colour])
        allowed = [rgb, np.rint(_secondary(rgb.astype(float)))]
        pix = img[mine]
        ok = np.zeros(len(pix), bool)
        for colour in allowed:
            ok |= (np.abs(pix - colour) <= 1).all(-1)
        assert ok.all(), f'object {i} has pixels of another colour'
        ys, xs = np.nonzero(mine)
        assert tuple(scene.boxes[i]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_scene_occlusion_order():
    objs = [SceneObject('plain', 'red', 'square'), SceneObject('plain', 'blue', 'square')]
    scene = render_scene(objs, 'sand', 0, 0, 64, clutter=False, noise=0.0, min_radius=0.5,
                         max_radius=0.5)
    # two large squares overlap: where both are drawn the later one is on top
    assert (scene.labels == 2).sum() > (scene.labels == 1).sum() >= 0
    assert scene.areas.sum() == (scene.labels > 0).sum()


def test_pretrain_writer_round_trips_through_imagelist(tmp_path):
    from pomp_mm.pretrain import ImageList
    classes = [class_at(i) for i in (3, 400, 9000)]
    csv_path = write_pretrain_set(str(tmp_path), classes, shots=2, seed=1, progress=False)
    vocab = world.world_vocabulary(classes)
    ds = ImageList(csv_path, vocabulary=vocab, image_size=64, train=False)
    assert [label for _, label in ds.items] == [0, 0, 1, 1, 2, 2]
    sample = ds[2]
    assert tuple(sample['inputs'].shape) == (1, 3, 64, 64) and sample['label'] == 1
    # rerun keeps the images (resumable) and writes the same CSV
    before = open(csv_path).read()
    write_pretrain_set(str(tmp_path), classes, shots=2, seed=1, progress=False)
    assert open(csv_path).read() == before


def test_pretrain_writer_renders_the_domain_and_refuses_mixing_settings(tmp_path):
    classes = [class_at(3), class_at(77)]
    write_pretrain_set(str(tmp_path), classes, shots=1, seed=1, progress=False, domain='sketch')
    index = pretrain_image_index(classes[1], 0)
    from PIL import Image
    saved = Image.open(tmp_path / 'images' / f'{index:08d}.png')
    assert _sha(saved) == _sha(render_object(classes[1], 1, index, domain='sketch'))
    assert _sha(saved) != _sha(render_object(classes[1], 1, index))
    # reused images must have been rendered the same way
    with pytest.raises(ValueError, match="'domain': 'sketch'}, not .*'domain': 'photo'"):
        write_pretrain_set(str(tmp_path), classes, shots=1, seed=1, progress=False)
    with pytest.raises(ValueError, match="'seed': 1.*not.*'seed': 2"):
        write_pretrain_set(str(tmp_path), classes, shots=1, seed=2, progress=False,
                           domain='sketch')
    with pytest.raises(ValueError, match="unknown domain 'cartoon'"):
        write_pretrain_set(str(tmp_path / 'x'), classes, shots=1, seed=1, domain='cartoon')


def test_eval_writer_round_trips_through_eval_reader(tmp_path):
    from pomp_mm.evaluation import image_folder_dataset
    s = protocol.eval_sets()['shapes']
    write_eval_set(s, str(tmp_path / 'shapes'), per_class=2, progress=False)
    ds = image_folder_dataset(str(tmp_path / 'shapes'))
    assert sorted(ds.classnames) == sorted(s.classnames) and len(ds) == 40


@pytest.mark.parametrize('call, match', [
    (lambda: WorldClass('striped', 'chartreuse', 'star', 'sand'), "unknown colour 'chartreuse'"),
    (lambda: WorldClass('wavy', 'red', 'star', 'sand'), "unknown pattern 'wavy'"),
    (lambda: SceneObject('plain', 'red', 'blob'), "unknown shape 'blob'"),
    (lambda: render_scene([], 'lava', 0, 0), "unknown background 'lava'"),
    (lambda: render_object(class_at(0), 0, 0, domain='cartoon'), "unknown domain 'cartoon'"),
    (lambda: render_object(class_at(0), -1, 0), 'seed must be an integer in 0..4294967295, '
     'got -1'),
    (lambda: render_object(class_at(0), 2 ** 32, 0), 'got 4294967296'),
    (lambda: render_object(class_at(0), 0, 0, size=8), 'image size must be an integer in '
     '16..1024, got 8'),
    (lambda: render_object(class_at(0), 0, 0, size=5000), 'got 5000'),
    (lambda: class_at(24000), 'class index 24000 is outside 0..23999'),
    (lambda: parse_class('red star'), "'red star' is not a class name"),
    (lambda: protocol.subset_classes(0), 'num_classes must be in 1..23900, got 0'),
    (lambda: protocol.subset_classes(30000), 'got 30000'),
    (lambda: world.world_vocabulary([]), 'empty class list'),
    (lambda: eval_image(protocol.eval_sets()['shapes'], 20, 0), "label 20 is outside 0..19 of "
     "'shapes'"),
    (lambda: render_eval_set(protocol.eval_sets()['shapes'], per_class=1001),
     'per_class must be an integer in 1..1000, got 1001'),
])
def test_bad_input_names_the_value(call, match):
    with pytest.raises(ValueError, match=match.replace('(', r'\(').replace('.', r'\.')):
        call()


def test_writer_bad_requests(tmp_path):
    with pytest.raises(ValueError, match='class list is empty'):
        write_pretrain_set(str(tmp_path), [], 1, 0, progress=False)
    with pytest.raises(ValueError, match='24001 classes requested; the world has 24000'):
        write_pretrain_set(str(tmp_path), all_classes() + [class_at(0)], 1, 0, progress=False)
    with pytest.raises(ValueError, match='shots must be an integer in 1..64, got 65'):
        write_pretrain_set(str(tmp_path), [class_at(0)], 65, 0, progress=False)
    with pytest.raises(ValueError, match="unknown evaluation set 'cars'"):
        from pomp_mm.synthetic.datasets import write_eval_sets
        write_eval_sets(str(tmp_path), ['cars'])
    assert not os.listdir(tmp_path) or os.listdir(tmp_path) == ['images']


def test_rendering_processes_write_the_same_files_as_one(tmp_path, monkeypatch):
    """Forked rendering gives byte-identical images (pre-training and a custom evaluation set
    whose draw is a lambda), resumes over what is there, and refuses a bad worker count."""
    from pomp_mm.synthetic import datasets
    monkeypatch.setattr(datasets, '_PARALLEL_MIN', 8)
    classes = [class_at(i) for i in range(0, 24000, 1500)]
    one = write_pretrain_set(str(tmp_path / 'one'), classes, shots=2, seed=1, progress=False,
                             workers=1)
    os.makedirs(tmp_path / 'two' / 'images')
    first = sorted(os.listdir(tmp_path / 'one' / 'images'))[0]
    with open(tmp_path / 'two' / 'images' / first, 'wb') as f:
        f.write(b'kept')  # already there: not rendered again
    two = write_pretrain_set(str(tmp_path / 'two'), classes, shots=2, seed=1, progress=False,
                             workers=2)
    names = sorted(os.listdir(tmp_path / 'one' / 'images'))
    assert names == sorted(os.listdir(tmp_path / 'two' / 'images')) and len(names) == 32
    for name in names[1:]:
        with open(tmp_path / 'one' / 'images' / name, 'rb') as a, \
                open(tmp_path / 'two' / 'images' / name, 'rb') as b:
            assert a.read() == b.read(), name
    with open(one) as a, open(two) as b:
        assert a.read() == b.read()
    with open(tmp_path / 'two' / 'images' / first, 'rb') as f:
        assert f.read() == b'kept'
    custom = protocol.custom_eval_set('few', [parse_class('plain red star on sand'),
                                              parse_class('hollow blue kite on snow')],
                                      per_class=5)
    for workers in (1, 2):
        write_eval_set(custom, str(tmp_path / f'eval{workers}'), progress=False, workers=workers)
    for sub in ('plain_red_star_on_sand', 'hollow_blue_kite_on_snow'):
        for j in range(5):
            with open(tmp_path / 'eval1' / sub / f'{j:04d}.png', 'rb') as a, \
                    open(tmp_path / 'eval2' / sub / f'{j:04d}.png', 'rb') as b:
                assert a.read() == b.read()
    with pytest.raises(ValueError, match='workers must be a positive integer, got 0'):
        write_pretrain_set(str(tmp_path / 'x'), classes, shots=1, seed=1, workers=0)
