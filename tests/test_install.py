"""The two install layers: what each make target asks pip for (tools/install.sh dry run), and
that the core layer really runs without the OpenMMLab toolkits."""
import os
import subprocess
import sys

from helpers import ROOT, core_layer_env, tool_path

TOOLKITS = ('mmcv', 'mmdet', 'mmseg', '[test]', '[all]')


def _dry_run(*args):
    env = dict(os.environ, POMP_MM_INSTALL_DRY_RUN='1')
    return subprocess.run(['bash', tool_path('install.sh'), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)


def _pip_lines(res):
    assert res.returncode == 0, res.stderr
    return [line for line in res.stdout.splitlines() if line.startswith('pip install')]


def test_core_layer_asks_pip_for_no_toolkit():
    lines = _pip_lines(_dry_run('core'))
    assert 'pip install torch==2.14.1 torchvision==0.29.1' in lines
    assert lines[-1] == 'pip install -e .'
    assert not [line for line in lines if any(t in line for t in TOOLKITS)], lines


def test_all_layer_adds_mmcv_and_the_test_extra():
    lines = _pip_lines(_dry_run('all'))
    assert any('mmcv==2.1.0' in line for line in lines)
    assert lines[-1] == 'pip install -e .[test]'
    assert _pip_lines(_dry_run()) == lines  # the default layer


def test_an_unknown_layer_is_one_line():
    res = _dry_run('gpu')
    assert res.returncode == 2
    assert res.stderr.strip() == "tools/install.sh: unknown layer 'gpu' (core or all)"


def test_make_targets_pick_their_layer():
    def recipe(target):
        res = subprocess.run(['make', '-n', target], capture_output=True, text=True, cwd=ROOT,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout
    for target in ('demo', 'claims', 'bench', 'install-core'):
        assert 'tools/install.sh core' in recipe(target), target
    for target in ('test', 'test-fast', 'lint', 'install', 'install-all'):
        assert 'tools/install.sh all' in recipe(target), target


def test_the_core_layer_blocker_blocks(tmp_path):
    """The environment the demo's end-to-end test runs under: the toolkits cannot be imported,
    pomp_mm's core can, and an adapter says which extra to install."""
    code = ('import pomp_mm, pomp_mm.pretrain, pomp_mm.evaluation, pomp_mm.synthetic\n'
            'for name in ("mmcv", "mmdet", "mmseg"):\n'
            '    try:\n'
            '        __import__(name)\n'
            '    except ImportError:\n'
            '        pass\n'
            '    else:\n'
            '        raise SystemExit(name + " imported")\n'
            'try:\n'
            '    import pomp_mm.mmseg\n'
            'except ImportError as e:\n'
            '    print(e)\n')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=core_layer_env(str(tmp_path)), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "pip install 'pomp_mm[mmseg]'" in res.stdout
