"""A first try without the CLIP weights, the prompt file or the data (a new user's machine, a
cluster node without internet): every tool stops before building anything, with one line on
stderr naming what is missing and the config key or option that points at a local copy, exit
code 2, no traceback. The hub is offline (HF_HUB_OFFLINE=1) and its cache an empty folder, so
the weights are missing on any machine and nothing is downloaded."""
import os
import sys

import pytest
import torch

from helpers import run_tool_cases
from pomp_mm import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = 'see docs/usage.md#offline-missing-weights-prompts-or-data'
VOC = os.path.join(ROOT, 'configs', 'mmseg', 'pomp_voc.py')
COCO = os.path.join(ROOT, 'configs', 'mmdet', 'pomp_faster-rcnn_r50_fpn_ov-coco.py')
OPENAI = ("CLIP weights 'openai' for ViT-B-16 are not on this machine and cannot be downloaded "
          '(HF_HUB_OFFLINE is set); point {key} at a local file ({fix})')


def _one_line(res, tool):
    """The error line (without the tool's prefix and the --debug hint)."""
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert 'Traceback' not in res.stderr, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr[-3000:]
    prefix, suffix = f'{tool}: error: ', ' (--debug for the traceback)'
    assert lines[0].startswith(prefix) and lines[0].endswith(suffix), lines[0]
    return lines[0][len(prefix):-len(suffix)]


@pytest.fixture
def tiny_clip(tmp_path):
    """A local tiny CLIP weights file (the weights are present; only the data is not)."""
    from pomp_mm.clip import build_clip
    torch.manual_seed(0)
    path = tmp_path / 'tiny.pt'
    torch.save(build_clip('tiny').state_dict(), path)
    return str(path)


def _hub_env(hub_cache):
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', HF_HOME=str(hub_cache),
               HF_HUB_CACHE=str(hub_cache / 'hub'))
    env.pop('POMP_MM_DEBUG', None)
    return env


@pytest.fixture(scope='module')
def runner_tool_runs(tmp_path_factory):
    """The runs of the runner tools and demos below (the slow tests), all in one Python
    process (helpers.run_tool_cases; each stops before building anything): name ->
    (CompletedProcess, its tmp folder)."""
    from pomp_mm.clip import build_clip
    tmp = tmp_path_factory.mktemp('runner_tools')
    torch.manual_seed(0)
    tiny_clip = str(tmp / 'tiny.pt')
    torch.save(build_clip('tiny').state_dict(), tiny_clip)
    ckpt, image = tmp / 'model.pth', tmp / 'demo.jpg'
    ckpt.write_bytes(b'')
    image.write_bytes(b'')
    tiny = ['model.text_encoder.clip_model=tiny', f'model.text_encoder.pretrained={tiny_clip}']
    runs = {tool: (tool, [VOC, *([str(ckpt)] if tool == 'test.py' else []), '--work-dir',
                          str(tmp / f'w_{tool}')]) for tool in ('train.py', 'test.py')}
    runs['train data'] = ('train.py', [
        VOC, '--work-dir', str(tmp / 'w_train data'), '--cfg-options', *tiny,
        'model.text_encoder.prompt=None', *[f'{k}={tmp / "VOC2012"}' for k in DATA_KEYS]])
    runs['test data and prompt'] = ('test.py', [
        VOC, str(ckpt), '--cfg-options', *tiny, f'model.text_encoder.prompt={tmp / "pomp.pth"}',
        f'test_dataloader.dataset.data_root={tmp / "voc"}'])
    for tool in ('seg_demo.py', 'det_demo.py'):
        runs[tool] = (tool, [str(image), VOC if tool == 'seg_demo.py' else COCO, str(ckpt),
                             '--out', str(tmp / f'out_{tool}.png')])
    done = run_tool_cases(list(runs.values()), str(tmp / 'runs'), env=_hub_env(tmp),
                          timeout=600, cwd=ROOT)
    return {name: (res, tmp) for name, res in zip(runs, done)}


#: the three keys of pomp_voc.py that point at the VOC folder
DATA_KEYS = ['train_dataloader.dataset.datasets.0.data_root',
             'train_dataloader.dataset.datasets.1.data_root', 'val_dataloader.dataset.data_root']


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_runner_tools_without_the_clip_weights_name_the_key(tool, runner_tool_runs):
    """pomp_voc.py, as a new user first runs it: the open_clip tag is not cached and the hub
    is offline. The line names the weights, the config key with a --cfg-options fix, and the
    other missing inputs (the prompt and, for the run's own split, the data)."""
    res, tmp_path = runner_tool_runs[tool]
    key = 'model.text_encoder.pretrained'
    line = _one_line(res, tool)
    assert line.startswith(OPENAI.format(key=key, fix=f'--cfg-options {key}=/path/ViT-B-16.pt'))
    assert line.endswith(DOCS)
    # the others, where this machine lacks them too (a fresh clone does)
    for what, path in (('prompt file', 'checkpoints/vit_b16_ep20_randaug2_unc1000_16shots_'
                                        'nctx16_cscFalse_ctpend_seed42.pth.tar'),
                       ('dataset folder', 'data/VOCdevkit/VOC2012')):
        assert (f"{what} '{path}'" in line) != os.path.exists(os.path.join(ROOT, path)), line
    assert not (tmp_path / f'w_{tool}').exists()  # stopped before the Runner


@pytest.mark.slow
def test_train_without_the_data_names_every_data_root_key(runner_tool_runs):
    """The CLIP weights are a local tiny CLIP and there is no prompt: the missing dataset
    folder is named with the three keys that point at it (two training sets, validation),
    each in the --cfg-options fix."""
    res, tmp_path = runner_tool_runs['train data']
    missing, keys = str(tmp_path / 'VOC2012'), DATA_KEYS
    assert _one_line(res, 'train.py') == (
        f"dataset folder '{missing}' not found; point {keys[0]}, {keys[1]} and {keys[2]} at a "
        'local folder (--cfg-options ' + ' '.join(f'{k}=/path/VOC2012' for k in keys) + '); '
        + DOCS)
    assert not (tmp_path / 'w_train data').exists()


@pytest.mark.slow
def test_test_without_its_data_and_prompt_names_them(runner_tool_runs):
    """test.py checks the test split's folder (not the training sets') and a prompt file
    given in the config."""
    res, tmp_path = runner_tool_runs['test data and prompt']
    prompt = str(tmp_path / 'pomp.pth')
    assert _one_line(res, 'test.py') == (
        f"prompt file '{prompt}' not found; point model.text_encoder.prompt at a local file "
        f'(--cfg-options model.text_encoder.prompt=/path/pomp.pth); also missing: dataset '
        f"folder '{tmp_path / 'voc'}'; " + DOCS)


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['seg_demo.py', 'det_demo.py'])
def test_demos_without_the_clip_weights_name_the_key(tool, runner_tool_runs):
    res, tmp_path = runner_tool_runs[tool]
    key = ('model.text_encoder.pretrained' if tool == 'seg_demo.py' else
           'model.roi_head.bbox_head.classifier.text_encoder.pretrained')
    line = _one_line(res, tool)
    # the demos need no data; the prompt file is named too unless a user has it
    assert line.startswith(OPENAI.format(key=key, fix=f'--cfg-options {key}=/path/ViT-B-16.pt'))
    assert line.endswith(DOCS) and 'dataset' not in line
    assert not (tmp_path / f'out_{tool}.png').exists()


@pytest.fixture(scope='module')
def clip_tool_runs(tmp_path_factory):
    """The runs of the CLIP tools below, all in one Python process (helpers.run_tool_cases;
    each stops before building anything): name -> (CompletedProcess, its tmp folder)."""
    from pomp_mm.clip import build_clip
    tmp = tmp_path_factory.mktemp('clip_tools')
    torch.manual_seed(0)
    tiny_clip = str(tmp / 'tiny.pt')
    torch.save(build_clip('tiny').state_dict(), tiny_clip)
    hub = ['--clip-model', 'ViT-B-16', '--pretrained', 'openai', '--device', 'cpu']
    runs = {
        'export_embeddings.py': ('export_embeddings.py', [
            '--vocab', 'cat . dog', '--out', str(tmp / 'e.npy'), *hub]),
        'eval_classification.py': ('eval_classification.py', [
            '--datasets', 'none', '--folder', f'x={tmp}', '--out-dir', str(tmp / 'o'), *hub]),
        'data_root': ('eval_classification.py', [
            '--data-root', str(tmp / 'data'), '--datasets', 'cross', '--clip-model', 'tiny',
            '--pretrained', tiny_clip, '--device', 'cpu', '--out-dir', str(tmp / 'o')]),
        'prompt': ('export_embeddings.py', [
            '--vocab', 'cat . dog', '--clip-model', 'tiny', '--pretrained', tiny_clip,
            '--prompt', 'no_such_prompt.pth', '--out', str(tmp / 'e.npy')]),
    }
    done = run_tool_cases(list(runs.values()), str(tmp / 'runs'), env=_hub_env(tmp),
                          timeout=300, cwd=ROOT)
    return {name: (res, tmp) for name, res in zip(runs, done)}


@pytest.mark.parametrize('tool', ['export_embeddings.py', 'eval_classification.py'])
def test_clip_tools_without_the_weights_name_the_option(tool, clip_tool_runs):
    res, _ = clip_tool_runs[tool]
    assert _one_line(res, tool) == OPENAI.format(
        key='--pretrained', fix='--pretrained /path/ViT-B-16.pt') + '; ' + DOCS


def test_eval_classification_without_its_data_root_or_prompt_names_them(clip_tool_runs):
    res, tmp_path = clip_tool_runs['data_root']
    missing = str(tmp_path / 'data')
    assert _one_line(res, 'eval_classification.py') == (
        f"dataset folder '{missing}' not found; point --data-root at a local folder "
        f'(--data-root /path/data); ' + DOCS)
    prompt = 'no_such_prompt.pth'  # relative: the line says to what
    res, _ = clip_tool_runs['prompt']
    assert _one_line(res, 'export_embeddings.py') == (
        f"prompt file '{prompt}' not found (relative to {ROOT}); point --prompt at a local "
        f'file (--prompt /path/{prompt}); ' + DOCS)


# ---------------------------------------------------------------- in process (fast)
def test_config_walk_finds_every_clip_module_and_only_the_asked_data(tiny_clip, tmp_path):
    """Every dict with a clip_model is a CLIP module, however deep (list items by index);
    data_root only under the loaders asked for; other modules' weights only with weights."""
    missing = str(tmp_path / 'nope')
    cfg = dict(
        model=dict(pretrained=missing + '.pth', backbone=dict(clip_model='tiny',
                                                              pretrained=tiny_clip),
                   heads=[dict(clip_model='tiny', pretrained=missing + '.pt',
                               prompt=missing + '.pth.tar'),
                          dict(clip_model='tiny', pretrained=None, prompt=None)]),
        load_from='https://example.org/model.pth',
        train_dataloader=dict(dataset=dict(type='ConcatDataset', datasets=[
            dict(data_root=str(tmp_path)), dict(data_root=missing)])),
        test_dataloader=dict(dataset=dict(data_root=missing + '_test')))
    keys = [p.key for p in cli.config_problems(cfg)]
    assert keys == ['model.heads.0.pretrained', 'model.heads.0.prompt']
    keys = [p.key for p in cli.config_problems(cfg, ['train_dataloader'], weights=True)]
    assert keys == ['model.pretrained', 'model.heads.0.pretrained', 'model.heads.0.prompt',
                    'train_dataloader.dataset.datasets.1.data_root']


def test_a_failed_download_deep_in_a_build_is_one_line(monkeypatch, tmp_path, capsys):
    """With the network trusted, the pre-flight lets an uncached tag through; when the
    download then fails inside open_clip, rewrapped by mmengine's registry, run() still ends
    with one line naming the weights, the key and the hub's reason, and exit code 2."""
    from huggingface_hub import constants
    from mmengine.registry import Registry

    from pomp_mm import PompTextEncoder
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(cli, '_PENDING', [])
    encoder = dict(type='PompTextEncoder', clip_model='ViT-B-16', pretrained='openai',
                   vocabulary=['cat'])
    assert cli.config_problems(dict(model=dict(text_encoder=encoder))) == []
    assert [p.key for p in cli._PENDING] == ['model.text_encoder.pretrained']
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)  # the download fails, offline
    registry = Registry('offline test')
    registry.register_module(module=PompTextEncoder)
    monkeypatch.setattr(sys, 'argv', ['train.py'])
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: registry.build(encoder))
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip()
    assert '\n' not in line and line.startswith(
        "train.py: error: CLIP weights 'openai' for ViT-B-16 could not be downloaded (")
    assert line.endswith('); point model.text_encoder.pretrained at a local file '
                         '(--cfg-options model.text_encoder.pretrained=/path/ViT-B-16.pt); '
                         + DOCS + ' (--debug for the traceback)'), line
    monkeypatch.setattr(sys, 'argv', ['train.py', '--debug'])
    with pytest.raises(RuntimeError, match="Failed to download weights for tag 'openai'"):
        cli.run(lambda: registry.build(encoder))
