"""The synthetic world's experiment runner (pomp_mm.synthetic.experiments) and its report
helpers: what every experiment tool shares."""
import json
import os

import pytest

from pomp_mm.fileio import atomic_write_json
from pomp_mm.synthetic import experiments as exp
from pomp_mm.synthetic.report import markdown_table, mean_sd
from helpers import run_tool_here


def test_mean_sd_formats_over_seeds():
    assert mean_sd([]) == '-'
    assert mean_sd([81.25]) == '81.2'
    assert mean_sd([80.0, 82.0, 84.0]) == '82.0 ± 2.0'  # sample sd
    assert mean_sd([1.0, 2.0], digits=2) == '1.50 ± 0.71'


def test_markdown_table_aligns_and_refuses_a_ragged_row():
    assert markdown_table(['method', 'a', 'b'], [['hand', '1.0', '2.0']]) == [
        '| method | a | b |', '|---|---:|---:|', '| hand | 1.0 | 2.0 |']
    with pytest.raises(ValueError, match=r"a row of 2 cells in a table of 3 columns: "
                                         r"\['pomp', '1.0'\]"):
        markdown_table(['method', 'a', 'b'], [['pomp', '1.0']])


def test_state_round_trips_and_a_broken_record_is_named(tmp_path):
    path = str(tmp_path / 'sub' / 'state.json')
    default = {'runs': {}}
    state = exp.load_state(path, default)
    state['runs']['pomp/seed0'] = {'top1': 81.5, 'name': 'ünïcode'}
    assert default == {'runs': {}}  # the default is copied, never filled in
    exp.save_state(path, state)
    assert exp.load_state(path, default) == state
    assert [f for f in os.listdir(tmp_path / 'sub')] == ['state.json']  # no temporary left
    with open(path, 'w') as f:
        f.write('{"runs": {')  # a file cut short by hand
    with pytest.raises(ValueError, match=f'{path} is not a JSON record of runs'):
        exp.load_state(path, default)


def test_atomic_json_keeps_the_old_file_when_encoding_fails(tmp_path):
    path = str(tmp_path / 'r.json')
    atomic_write_json(path, {'a': 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {'a': object()})
    assert json.load(open(path)) == {'a': 1}


def test_summarise_adds_the_means_and_chance():
    from pomp_mm.synthetic.protocol import CROSS_DOMAIN_SETS, cross_dataset_sets, eval_sets
    sets = list(eval_sets('v3'))
    results = {'hand': {s: float(i) for i, s in enumerate(sets)}}
    summary = exp.summarise(results, 'v3')
    row = summary['hand']
    cross = cross_dataset_sets('v3')
    assert row['mean'] == pytest.approx(sum(row[s] for s in cross) / len(cross))
    assert row['domain_mean'] == pytest.approx(
        sum(row[s] for s in CROSS_DOMAIN_SETS) / len(CROSS_DOMAIN_SETS))
    assert summary['chance'][sets[0]] == eval_sets('v3')[sets[0]].chance
    table = exp.format_results(summary, 'title').split('\n')
    assert table[0] == 'title' and table[2].endswith('| mean | domain_mean |')
    assert table[4].startswith('| hand | 0.0 | 1.0 |')


def test_eval_rows_are_named_by_method_even_when_file_names_clash(tmp_path):
    a, b = str(tmp_path / 'pomp' / 'prompt_latest.pth'), str(tmp_path / 'coop' / 'p.pth')
    c = str(tmp_path / 'coop2' / 'prompt_latest.pth')
    raw = {'hand prompt': 1, 'template ensemble': 2, a: 3, 'p.pth': 4, c: 5}
    assert exp._relabel(raw, {'pomp': a, 'coop': b, 'coop2': c}) == {
        'hand': 1, 'ensemble': 2, 'pomp': 3, 'coop': 4, 'coop2': 5}


def test_epoch_options_and_iteration_time(tmp_path):
    assert exp.epoch_options(None) == []
    assert exp.epoch_options(2) == ['train_cfg.max_epochs=2', 'param_scheduler.1.T_max=2',
                                    'param_scheduler.1.end=2']
    log = tmp_path / '20260101' / 'vis_data'
    log.mkdir(parents=True)
    lines = [{'step': s, 'time': 9.0 if s <= 20 else t} for s, t in
             zip(range(1, 26), [0] * 20 + [0.5, 0.1, 0.3, 0.2, 0.4])]
    (log / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in lines))
    assert exp.iter_time(str(tmp_path)) == pytest.approx(0.3)  # warm-up steps left out
    assert exp.iter_time(str(tmp_path / 'none')) is None


def test_a_failing_tool_raises_with_its_log_tail(tmp_path):
    log = str(tmp_path / 'tool.log')
    with pytest.raises(exp.ToolError, match=r'(?s)pretrain.py .*--no-such-option failed with '
                                            r'exit code 2\nlast lines of .*no-such-option'):
        exp.run_tool(['pretrain.py', 'x.py', '--no-such-option'], log)
    with pytest.raises(FileNotFoundError, match='tools/nope.py not found'):
        exp.tool_path('nope.py')


def test_ov_tool_main_reaches_its_run_and_refuses_another_clip_in_one_line(tmp_path,
                                                                          monkeypatch, capsys):
    """``ov.py run`` calls the tool's own run() (not the cli's of the same name): a work
    folder of another world CLIP stops it in one line with exit code 2 (the script's
    __main__ block in this process: helpers.run_tool_here)."""
    (tmp_path / 'cnn').mkdir()
    (tmp_path / 'cnn' / 'clip.sha256').write_text('0' * 64 + '\n')
    res = run_tool_here('synthetic/ov.py', ['run', '--work-dir', str(tmp_path), '--quick'],
                        monkeypatch, capsys)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().count('\n') == 0
    assert f"another world CLIP (sha256 {'0' * 64}" in res.stderr


def test_a_watched_tool_reports_its_log_lines_as_they_come(tmp_path):
    lines = []
    exp.run_tool(['pretrain.py', '--help'], str(tmp_path / 'help.log'), watch=lines.append)
    assert lines and lines[0].startswith('usage: pretrain.py')
    assert lines == [ln for ln in open(tmp_path / 'help.log').read().splitlines() if ln]


def test_training_progress_follows_an_mmengine_log():
    class Bar:
        total, n = None, 0

        def refresh(self):
            pass
    bar = Bar()
    watch = exp.training_progress(bar)
    watch('12/04 10:00:00 - mmengine - INFO - Epoch(train) [1][20/94]  lr: 1e-2')  # too early
    assert bar.total is None
    watch("train_cfg = dict(max_epochs=3, type='EpochBasedTrainLoop')")
    watch('12/04 10:00:05 - mmengine - INFO - Epoch(train) [2][ 40/94]  lr: 1e-2')
    assert (bar.total, bar.n) == (3 * 94, 94 + 40)


def test_a_failing_stage_names_itself_and_the_log(tmp_path, capsys):
    stages = exp.Stages(str(tmp_path / 'logs'))
    with stages.stage('render', total=2) as bar:
        bar.update(1)
    assert list(stages.times) == ['render']
    with pytest.raises(SystemExit, match=r'(?s)^stage "evaluate" failed: x.py failed with '
                                         r'exit code 1\nlast lines of .*evaluate.log'):
        with stages.stage('evaluate'):
            raise exp.ToolError(f'x.py failed with exit code 1\nlast lines of '
                                f'{stages.log("evaluate")}:\nTraceback')
    assert list(stages.times) == ['render']
    assert stages.summary()[-1].split() == ['total', f'{stages.times["render"]:.0f}', 's']
    assert exp.Stages(str(tmp_path / 'v'), verbose=True).log('x') is None
