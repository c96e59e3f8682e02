"""A user's mistake on the command line: one line naming the value, exit code 2, the
traceback only with --debug."""
import os

import pytest
import torch

from helpers import run_tool_cases, write_image_folder
from pomp_mm import load_prompt, save_prompt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_line_error(res, tool, message):
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert 'Traceback' not in res.stderr, res.stderr[-2000:]
    assert lines[-1] == f'{tool}: error: {message} (--debug for the traceback)', lines[-1]


def _runs(tmp, cases):
    """``cases``: name -> (tool, args[, env]); all in one Python process (helpers.
    run_tool_cases: these runs stop at a user error): name -> CompletedProcess."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('POMP_MM_DEBUG', None)
    done = run_tool_cases(list(cases.values()), str(tmp / 'runs'), env=env, timeout=300,
                          cwd=ROOT)
    return dict(zip(cases, done))


@pytest.fixture(scope='module')
def fast_runs(tmp_path_factory):
    """The runs of the tests not marked slow: name -> (CompletedProcess, their tmp folder)."""
    tmp = tmp_path_factory.mktemp('cli_fast')
    (tmp / 'set' / 'cat').mkdir(parents=True)
    bad = tmp / 'prompt.pth'
    bad.write_text('not a checkpoint\n')
    write_image_folder(str(tmp / 'csc_set'), ['cat', 'dog'], 1, size=8)
    csc = save_prompt(str(tmp / 'csc.pth'), torch.randn(2, 4, 64), n_ctx=4)
    common = ['--clip-model', 'tiny', '--device', 'cpu', '--out-dir', str(tmp / 'out')]
    runs = _runs(tmp, {
        'broken prompt': ('eval_classification.py', [
            '--datasets', 'none', '--folder', f'x={tmp / "set"}', '--prompts', str(bad),
            *common]),
        'csc prompt': ('eval_classification.py', [
            '--datasets', 'none', '--folder', f'x={tmp / "csc_set"}', '--prompts', csc,
            *common])})
    return {name: (res, tmp) for name, res in runs.items()}


@pytest.fixture(scope='module')
def slow_runs(tmp_path_factory):
    """The runs of the tests marked slow: name -> (CompletedProcess, their tmp folder)."""
    tmp = tmp_path_factory.mktemp('cli_slow')
    missing = str(tmp / 'missing')
    folder_args = ['--datasets', 'none', '--folder', f'x={missing}', '--clip-model', 'tiny',
                   '--device', 'cpu', '--out-dir', str(tmp / 'out')]
    config = os.path.join(ROOT, 'configs', 'pretrain', 'pomp_synthetic.py')
    cases = {
        'missing folder': ('eval_classification.py', folder_args),
        'missing folder --debug': ('eval_classification.py', folder_args + ['--debug']),
        'missing folder POMP_MM_DEBUG': ('eval_classification.py', folder_args,
                                         {'POMP_MM_DEBUG': '1'}),
        'missing config': ('pretrain.py', [str(tmp / 'nope.py'), '--work-dir',
                                           str(tmp / 'w_missing config')]),
        'bad seed': ('pretrain.py', [config, '--work-dir', str(tmp / 'w_bad seed'),
                                     '--cfg-options', 'randomness.seed=-1']),
    }
    for option in ('--chunk-size', '--batch-size'):
        cases[option] = ('eval_classification.py', ['--datasets', 'none', '--clip-model',
                                                    'tiny', option, '0'])
    return {name: (res, tmp) for name, res in _runs(tmp, cases).items()}


@pytest.mark.slow
def test_a_missing_folder_is_one_line_and_debug_shows_the_traceback(slow_runs):
    res, tmp_path = slow_runs['missing folder']
    missing = str(tmp_path / 'missing')
    _one_line_error(res, 'eval_classification.py', f"--folder x: '{missing}' is not a folder")
    assert not (tmp_path / 'out').exists()
    for debug in (slow_runs['missing folder --debug'][0],
                  slow_runs['missing folder POMP_MM_DEBUG'][0]):
        assert debug.returncode != 0 and 'Traceback' in debug.stderr
        assert f"FileNotFoundError: --folder x: '{missing}' is not a folder" in debug.stderr


def test_a_broken_prompt_file_is_one_line_naming_it(fast_runs):
    res, tmp_path = fast_runs['broken prompt']
    bad = tmp_path / 'prompt.pth'
    _one_line_error(res, 'eval_classification.py',
                    f"'{bad}' is not a torch checkpoint (starts with b'not '; torch.save files "
                    'are zip archives or pickles)')


@pytest.mark.slow
@pytest.mark.parametrize('option', ['--chunk-size', '--batch-size'])
def test_zero_sizes_are_refused_when_parsing(option, slow_runs):
    res, _ = slow_runs[option]
    assert res.returncode == 2
    assert f'argument {option}: 0 is not >= 1' in res.stderr.splitlines()[-1]


def test_truncated_and_foreign_prompt_files_name_the_file(tmp_path):
    good = save_prompt(str(tmp_path / 'good.pth'), torch.randn(4, 64), n_ctx=4)
    data = open(good, 'rb').read()
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=f"'{cut}' is not a readable torch checkpoint "
                                         r'\(truncated, or not saved by torch.save\): '):
        load_prompt(str(cut))
    text = tmp_path / 'notes.pth'
    text.write_text('hello')
    with pytest.raises(ValueError, match=f"'{text}' is not a torch checkpoint"):
        load_prompt(str(text))
    assert load_prompt(good).ctx.shape == (4, 64)


@pytest.mark.slow
@pytest.mark.parametrize('case', ['missing config', 'bad seed'])
def test_runner_tools_say_what_is_wrong_in_one_line(case, slow_runs):
    res, tmp_path = slow_runs[case]
    if case == 'missing config':
        missing = str(tmp_path / 'nope.py')
        assert res.returncode == 2 and 'Traceback' not in res.stderr, res.stderr[-2000:]
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith('pretrain.py: error: ') and missing in last, last
    else:
        _one_line_error(res, 'pretrain.py', 'randomness.seed=-1 is out of range: seeds are '
                        'integers from 0 to 2**32 - 1 (or None for a random one)')
    assert not (tmp_path / f'w_{case}').exists()


def test_a_class_specific_prompt_without_names_is_refused_naming_the_file(fast_runs):
    """eval_classification reads each dataset with its own names: a class-specific prompt
    saved without its contexts' names is refused as such, not as a vocabulary-size clash."""
    res, tmp_path = fast_runs['csc prompt']
    csc = str(tmp_path / 'csc.pth')
    _one_line_error(res, 'eval_classification.py',
                    f'{csc} is a class-specific prompt (2 contexts) saved without the class '
                    "names of its contexts, so it cannot be matched to any dataset's classes: "
                    'evaluate a shared-context prompt, or one saved with csc_names')
