"""Small data generators shared by the tests (tiny images in temporary folders), and one
comparison of two text encoders."""
import os

import numpy as np


#: the class folders of the image-folder fixtures (conftest.py)
IMAGE_CLASSES = ['cat', 'dog', 'car', 'tree', 'boat', 'lamp', 'cup', 'shoe']


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


def _box_ann(ann_id, image_id, category_id, box):
    x, y, w, h = box
    return {'id': ann_id, 'image_id': image_id, 'category_id': category_id, 'bbox': [x, y, w, h],
            'area': float(w * h), 'iscrowd': 0,
            'segmentation': [[x, y, x + w, y, x + w, y + h, x, y + h]]}


def write_detection_images(folder, count, size=64, seed=0):
    """``count`` random ``size`` x ``size`` JPEGs named 000000.jpg, 000001.jpg, ..."""
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    names = []
    for i in range(count):
        name = f'{i:06d}.jpg'
        Image.fromarray(rng.randint(0, 255, (size, size, 3), dtype=np.uint8)).save(
            os.path.join(folder, name))
        names.append(name)
    return names


def write_coco_json(path, file_names, categories, boxes, size=64):
    """A COCO-format file: ``categories`` is a list of names (ids 1..N); ``boxes[i]`` lists
    ``(category name, [x, y, w, h])`` for image i."""
    import json
    cat_id = {name: i + 1 for i, name in enumerate(categories)}
    anns = []
    for img_id, per_image in enumerate(boxes, start=1):
        for name, box in per_image:
            anns.append(_box_ann(len(anns) + 1, img_id, cat_id[name], box))
    data = {
        'images': [{'id': i, 'file_name': f, 'height': size, 'width': size}
                   for i, f in enumerate(file_names, start=1)],
        'annotations': anns,
        'categories': [{'id': i, 'name': n} for n, i in cat_id.items()],
    }
    with open(path, 'w') as f:
        json.dump(data, f)
    return path


def write_lvis_json(path, split, file_names, categories, frequencies, boxes, size=64):
    """An LVIS v1-format file: images carry coco_url (``split``/name), categories carry
    ``frequency`` and ``image_count`` (counted from ``boxes``), as LVIS' own files do."""
    import json
    cat_id = {name: i + 1 for i, name in enumerate(categories)}
    anns, images_of = [], {}
    for img_id, per_image in enumerate(boxes, start=1):
        for name, box in per_image:
            anns.append(_box_ann(len(anns) + 1, img_id, cat_id[name], box))
            images_of.setdefault(name, set()).add(img_id)
    data = {
        'images': [{'id': i, 'height': size, 'width': size,
                    'coco_url': f'http://images.cocodataset.org/{split}/{f}',
                    'neg_category_ids': [], 'not_exhaustive_category_ids': []}
                   for i, f in enumerate(file_names, start=1)],
        'annotations': anns,
        'categories': [{'id': cat_id[n], 'name': n, 'synset': f'{n}.n.01',
                        'frequency': frequencies[n],
                        'image_count': len(images_of.get(n, ())),
                        'instance_count': sum(1 for a in anns if a['category_id'] == cat_id[n])}
                       for n in categories],
    }
    with open(path, 'w') as f:
        json.dump(data, f)
    return path


def assert_same_embeddings_and_grads(enc_a, enc_b, names, atol=1e-5, grad_rtol=1e-4):
    """Two prompt encoders with the same weights embed ``names`` alike (``atol``) and send the
    same gradient to their ``ctx`` (to ``grad_rtol`` of its largest entry)."""
    import torch
    a, b = enc_a.encode_names(names), enc_b.encode_names(names)
    torch.testing.assert_close(a, b, atol=atol, rtol=0)
    weights = torch.randn_like(a)
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    ga, gb = enc_a.prompt_learner.ctx.grad, enc_b.prompt_learner.ctx.grad
    torch.testing.assert_close(ga, gb, atol=grad_rtol * gb.abs().max().item(), rtol=0)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tool_path(name):
    """``tools/<name>`` (``name`` may hold a subfolder: ``synthetic/demo.py``)."""
    path = os.path.join(ROOT, 'tools', name)
    assert os.path.isfile(path), path
    return path


def load_tool(name):
    """Import ``tools/<name>.py`` as a module (the tools are scripts, not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name.replace('/', '_'),
                                                  tool_path(f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BLOCKER = '''import importlib.abc, sys
class _NoToolkits(importlib.abc.MetaPathFinder):
    """An environment of the core install layer: the OpenMMLab toolkits are not there."""
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmcv', 'mmdet', 'mmseg'):
            raise ModuleNotFoundError(f'No module named {name!r} (blocked: core layer)', name=name)
sys.meta_path.insert(0, _NoToolkits())
import importlib.metadata as _md
_real_version = _md.version
def _version(dist):
    if dist in ('mmcv', 'mmdet', 'mmsegmentation'):
        raise _md.PackageNotFoundError(dist)
    return _real_version(dist)
_md.version = _version
'''


def core_layer_env(folder):
    """Environment variables under which Python processes (and their children) behave as in
    the core install layer: importing mmcv, mmdet or mmseg fails."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'sitecustomize.py'), 'w') as f:
        f.write(_BLOCKER)
    path = os.environ.get('PYTHONPATH', '')
    return dict(os.environ, PYTHONPATH=folder + (os.pathsep + path if path else ''))


_CASES_DRIVER = r'''
import json, os, runpy, sys, traceback
cases, folder = json.loads(sys.argv[1]), sys.argv[2]
codes = []
for i, (tool, args, env) in enumerate(cases):
    sys.path.insert(0, os.path.dirname(tool))  # as `python tools/x.py` has it
    environ = dict(os.environ)
    os.environ.update(env)
    sys.stdout.flush(); sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.path.join(folder, f'{i}.out'), 'wb') as out, \
            open(os.path.join(folder, f'{i}.err'), 'wb') as err:
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        sys.argv = [tool] + list(args)
        try:
            runpy.run_path(tool, run_name='__main__')
            code = 0
        except SystemExit as stop:  # as the interpreter: a message goes to stderr, code 1
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            if not isinstance(stop.code, int) and stop.code is not None:
                print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(saved[0], 1); os.dup2(saved[1], 2)
    del sys.path[0]
    os.environ.clear()
    os.environ.update(environ)
    codes.append(code)
with open(os.path.join(folder, 'codes.json'), 'w') as f:
    json.dump(codes, f)
'''


def run_tool_cases(cases, folder, **kwargs):
    """Run tools in one Python process (one interpreter start and one import of torch and the
    toolkits instead of one per run): ``cases`` lists ``(tool, args)`` or ``(tool, args,
    env)``, ``tool`` as for :func:`tool_path`, ``env`` variables set for that run only (read
    when the run reads them, not at import); each runs the script as ``__main__`` with its
    own ``sys.argv``, its stdout and stderr caught at the file-descriptor level. For runs
    that end early (argument and input errors), not for ones that leave state behind; all
    share ``kwargs``, which go to :func:`subprocess.run` (``env``, ``cwd``, ``timeout``).

    Returns:
        One :class:`subprocess.CompletedProcess` per case (returncode, stdout, stderr).
    """
    import json
    import subprocess
    import sys
    os.makedirs(folder, exist_ok=True)
    spec = [[tool_path(case[0]), [str(a) for a in case[1]],
             {k: str(v) for k, v in (case[2] if len(case) > 2 else {}).items()}]
            for case in cases]
    res = subprocess.run([sys.executable, '-c', _CASES_DRIVER, json.dumps(spec), folder],
                         capture_output=True, text=True, **kwargs)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    with open(os.path.join(folder, 'codes.json')) as f:
        codes = json.load(f)
    done = []
    for i, (case, code) in enumerate(zip(cases, codes)):
        with open(os.path.join(folder, f'{i}.out'), encoding='utf-8', errors='replace') as f:
            out = f.read()
        with open(os.path.join(folder, f'{i}.err'), encoding='utf-8', errors='replace') as f:
            err = f.read()
        done.append(subprocess.CompletedProcess(case[1], code, out, err))
    return done


def run_tool_here(tool, args, monkeypatch, capsys):
    """Run ``tools/<tool>`` as ``python tools/<tool> args`` would, its ``__main__`` block
    included, but in this process (no interpreter start, no second import of torch and the
    toolkits): for runs that stop early on a user error. ``monkeypatch`` restores
    ``sys.argv`` and ``sys.path``; ``capsys`` catches the output.

    Returns:
        A :class:`subprocess.CompletedProcess` (returncode, stdout, stderr).
    """
    import runpy
    import subprocess
    import sys
    path = tool_path(tool)
    monkeypatch.setattr(sys, 'argv', [path] + [str(a) for a in args])
    monkeypatch.syspath_prepend(os.path.dirname(path))
    capsys.readouterr()
    try:
        runpy.run_path(path, run_name='__main__')
        code = 0
    except SystemExit as stop:  # as the interpreter: a message goes to stderr, code 1
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        if not isinstance(stop.code, int) and stop.code is not None:
            print(stop.code, file=sys.stderr)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


# ------------------------------------------------------------ synthetic open-vocabulary runs
#: the seeded runs of the scene fixtures validate once, with tools/test.py: train.py's own
#: validation after the last step (on the same scenes, after the checkpoint is written) would
#: only repeat it
NO_TRAIN_VAL = ['train_cfg.val_begin=1000000']


#: what the tool runs' fork server imports once: each run of :func:`run_repo_tool` then starts
#: as a fork of it instead of a new interpreter importing torch and the toolkits again (4-7 s a
#: run on 2 cores). They pull in huggingface_hub and transformers, which read their environment
#: (HF_HUB_OFFLINE, cache folders) at import: runs that set those take :func:`subprocess.run`.
TOOL_PRELOAD = ['torch', 'open_clip', 'mmengine.runner', 'mmdet.models', 'mmseg.models',
                'pomp_mm']


def _tool_process(path, args, cwd, environ, out, err):
    """A run of :func:`run_repo_tool`, in a fork of the preloaded server: the script as
    ``__main__`` as ``python path args`` runs it (exit codes likewise: multiprocessing maps
    ``SystemExit`` as the interpreter does), output at the file-descriptor level to files."""
    import atexit
    import runpy
    import sys

    import torch
    for fd, name in ((1, out), (2, err)):
        target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    if environ.get('OMP_NUM_THREADS'):  # the server read it before this run's value was set
        torch.set_num_threads(int(environ['OMP_NUM_THREADS']))
    sys.argv = [path] + list(args)
    # as the interpreter lays it out: the script's folder, then PYTHONPATH
    sys.path[:0] = [os.path.dirname(path)] + [
        p for p in environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    try:
        runpy.run_path(path, run_name='__main__')
    finally:
        atexit._run_exitfuncs()  # multiprocessing ends a child with os._exit


def run_repo_tool(name, *args, expect_rc=0, timeout=2400, env=None):
    """``tools/<name> args`` (or a script at an absolute path) in a new process, forked from
    a server that has imported :data:`TOOL_PRELOAD`; asserts its exit code. ``env`` (default:
    this process's) is its environment; OMP_NUM_THREADS defaults to 2, or to the share of the
    cores conftest.py gives a pytest-xdist worker. Environment read at import by the preloaded
    libraries is the server's (see :data:`TOOL_PRELOAD`).

    Returns:
        A :class:`subprocess.CompletedProcess` (returncode, stdout, stderr).
    """
    import multiprocessing
    import subprocess
    import tempfile
    env = dict(os.environ if env is None else env)
    env.setdefault('OMP_NUM_THREADS', os.environ['OMP_NUM_THREADS']
                   if os.environ.get('PYTEST_XDIST_WORKER') else '2')
    ctx = multiprocessing.get_context('forkserver')
    ctx.set_forkserver_preload(TOOL_PRELOAD)
    args = [str(a) for a in args]
    with tempfile.TemporaryDirectory() as folder:
        out, err = os.path.join(folder, 'out'), os.path.join(folder, 'err')
        proc = ctx.Process(target=_tool_process, args=(
            name if os.path.isabs(name) else tool_path(name), args, ROOT, env, out, err))
        proc.start()
        # generous: the detection fixture trains ~5 min alone, 3x that beside other CPU work
        proc.join(timeout)
        late = proc.exitcode is None
        if late:
            proc.kill()
            proc.join()
        texts = []
        for path in (out, err):
            with open(path, encoding='utf-8', errors='replace') as f:
                texts.append(f.read())
    res = subprocess.CompletedProcess([name] + args, proc.exitcode, *texts)
    assert not late, f'{name} ran past {timeout} s: ' + res.stderr[-3000:]
    assert res.returncode == expect_rc, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def train_then_test(config, work, opts, checkpoint, validate=False):
    """``tools/train.py`` ``config`` into ``work`` (with its own validation only if
    ``validate``), then ``tools/test.py`` on ``work/checkpoint``: returns the checkpoint and
    the test metrics."""
    import json
    run_repo_tool('train.py', config, '--work-dir', work, '--cfg-options', *opts,
                  *([] if validate else NO_TRAIN_VAL))
    ckpt = os.path.join(work, checkpoint)
    out = os.path.join(work, 'test.json')
    run_repo_tool('test.py', config, ckpt, '--work-dir', os.path.join(work, 'test'), '--out', out,
                  '--cfg-options', *opts)
    with open(out) as f:
        return ckpt, json.load(f)


def demo_on_an_unseen_object(tmp_path, tool: str, function: str, config: str, ckpt: str):
    """Run ``tools/<tool>.py``'s ``function`` on :func:`scene_with_an_unseen_object`'s scene
    with its custom vocabulary; checks the output file and the names it used. Returns the
    scene, object index, target name, vocabulary, the predictions and the names."""
    scene, j, target, image, vocab = scene_with_an_unseen_object(tmp_path)
    out, pred, got_names = getattr(load_tool(tool), function)(
        [image, config, ckpt, '--texts', ' . '.join(vocab), '--out',
         str(tmp_path / 'out.png'), '--device', 'cpu'])
    assert os.path.getsize(out) > 0 and got_names == vocab
    return scene, j, target, vocab, pred, got_names


def scene_with_an_unseen_object(tmp_path):
    """The first validation-seed scene with a large unseen object, saved as a PNG: the scene,
    the object's index, its class name, the image path and a custom vocabulary (the scene's
    classes and two more)."""
    from PIL import Image

    from pomp_mm.synthetic import protocol
    from pomp_mm.synthetic.scenes import scene_at
    unseen = protocol.scene_unseen_ids()
    names = [c.name for c in protocol.scene_classes()]
    for index in range(200):
        scene, ids = scene_at(999, index)
        big = [j for j, k in enumerate(ids) if k in unseen and scene.areas[j] >= 600]
        if big:
            break
    j = big[0]
    image = str(tmp_path / 'scene.png')
    Image.fromarray(scene.image).save(image)
    vocab = sorted({names[k] for k in ids} | {'purple circle', 'green bolt'})
    return scene, j, names[ids[j]], image, vocab
