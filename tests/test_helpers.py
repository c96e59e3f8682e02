"""The test helpers many tests stand on: helpers.run_repo_tool runs a script as
``python script args`` would, from a fork of a preloaded server."""
import os
import textwrap

import pytest

from helpers import run_repo_tool

SCRIPT = '''
import atexit, os, sys, time
import torch
import extra_mod
print('argv', sys.argv[1:], extra_mod.VALUE, os.environ['MARK'], torch.get_num_threads(),
      os.getcwd() == os.path.dirname(os.path.dirname(os.path.abspath(extra_mod.ROOT_HINT))))
os.write(2, b'raw stderr\\n')  # below Python's streams: caught at the descriptor
atexit.register(lambda: print('atexit ran'))
if __name__ == '__main__':
    if sys.argv[1] == 'sleep':
        time.sleep(60)
    sys.exit(int(sys.argv[1]) if sys.argv[1].isdigit() else sys.argv[1])
'''


@pytest.fixture
def script(tmp_path):
    lib = tmp_path / 'lib'
    lib.mkdir()
    (lib / 'extra_mod.py').write_text(f'VALUE = 7\nROOT_HINT = {os.path.abspath(__file__)!r}\n')
    path = tmp_path / 'tool.py'
    path.write_text(textwrap.dedent(SCRIPT))
    return str(path), dict(os.environ, MARK='m1', PYTHONPATH=str(lib), OMP_NUM_THREADS='1')


def test_run_repo_tool_runs_a_script_as_the_interpreter_would(script):
    path, env = script
    res = run_repo_tool(path, 3, 'x', expect_rc=3, env=env)
    # argv, PYTHONPATH, environment, threads, cwd (the repository root), atexit
    assert res.stdout == "argv ['3', 'x'] 7 m1 1 True\natexit ran\n"
    assert res.stderr == 'raw stderr\n'
    res = run_repo_tool(path, 'stopped: bad input', expect_rc=1, env=env)  # as SystemExit(str)
    assert res.stderr.endswith('stopped: bad input\n')
    with pytest.raises(AssertionError, match='raw stderr'):  # another code fails, with output
        run_repo_tool(path, 0, expect_rc=2, env=env)


def test_run_repo_tool_stops_a_run_past_its_timeout(script):
    path, env = script
    with pytest.raises(AssertionError, match=r'tool\.py ran past 2 s'):
        run_repo_tool(path, 'sleep', timeout=2, env=env)
