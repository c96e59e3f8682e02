"""Preemption-safe pre-training (tools/pretrain.py + pomp_mm.preemption): a real signal stops
the run after the current iteration with an atomically written resume checkpoint and exit code
128 + signal; resuming ends with the uninterrupted run's prompt, bit for bit (iteration- and
epoch-based loops, DDP on gloo). And tools/pretrain.py's one-line errors for missing inputs."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import (IMAGE_CLASSES, run_repo_tool, run_tool_cases, tool_path,
                     write_image_folder)
from pomp_mm import load_prompt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Test hooks, imported by the configs (custom_imports) from the test's tmp dir.
TEST_HOOKS = '''
import os, signal, time
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from pomp_mm.preemption import stop_requested


@HOOKS.register_module()
class StallUntilSignalHook(Hook):
    """After iteration STALL_AT: write work_dir/stalled, wait for a stop request (sent from
    outside), then let the iteration end."""
    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == int(os.environ.get('STALL_AT', '0')):
            open(os.path.join(runner.work_dir, 'stalled'), 'w').close()
            deadline = time.time() + 120
            while not stop_requested() and time.time() < deadline:
                time.sleep(0.05)


@HOOKS.register_module()
class DuringPreemptionSaveHook(Hook):
    """While the preemption checkpoint is being written: SAVE_ACTION=signal sends the process
    a second SIGTERM and a SIGINT; SAVE_ACTION=kill writes half the file and SIGKILLs it."""

    def before_save_checkpoint(self, runner, checkpoint):
        if not checkpoint['meta'].get('preempted'):
            return
        action = os.environ.get('SAVE_ACTION')
        if action == 'signal':
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
        elif action == 'kill':
            from mmengine.fileio.backends.local_backend import LocalBackend

            def put(self, obj, filepath):
                with open(filepath, 'wb') as f:
                    f.write(obj[:len(obj) // 2])
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            LocalBackend.put = put
'''


def _config(tmp_path, folder, name='cfg', max_iters=6, epochs=None, ckpt_interval=4,
            batch_size=4, num_workers=0):
    """A tiny POMP run (tiny CLIP, 8 classes of 3 images, deterministic views): an
    iteration-based loop of ``max_iters``, or ``epochs`` epochs of 6 iterations."""
    model = dict(type='PompPretrainer', clip_model='tiny', vocabulary=IMAGE_CLASSES, n_ctx=4,
                 num_sampled=4, seed=3)
    if epochs:
        total = epochs * 24 // batch_size
        loop = f"dict(type='EpochBasedTrainLoop', max_epochs={epochs})"
        checkpoint = "dict(type='CheckpointHook', interval=1, by_epoch=True)"
    else:
        total = max_iters
        loop = f"dict(type='IterBasedTrainLoop', max_iters={max_iters})"
        checkpoint = f"dict(type='CheckpointHook', interval={ckpt_interval}, by_epoch=False)"
    text = f"""
custom_imports = dict(imports=['pomp_mm', 'pomp_mm.pretrain', 'preempt_test_hooks'],
                      allow_failed_imports=False)
model = {model!r}
train_dataloader = dict(
    batch_size={batch_size}, num_workers={num_workers}, persistent_workers={num_workers > 0},
    sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
    collate_fn=dict(type='collate_views'),
    dataset=dict(type='ImageList', source={folder!r}, num_views=2, image_size=32,
                 train=False, vocabulary={IMAGE_CLASSES!r}))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9))
param_scheduler = [dict(type='CosineAnnealingLR', T_max={total}, by_epoch=False, begin=0,
                        end={total})]
train_cfg = {loop}
default_hooks = dict(logger=dict(type='LoggerHook', interval=1), checkpoint={checkpoint})
custom_hooks = [dict(type='PromptCheckpointHook', interval=2),
                dict(type='StallUntilSignalHook'), dict(type='DuringPreemptionSaveHook')]
randomness = dict(seed=0)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
"""
    (tmp_path / 'preempt_test_hooks.py').write_text(TEST_HOOKS)
    path = tmp_path / f'{name}.py'
    path.write_text(text)
    return str(path)


def _env(tmp_path, **extra):
    env = dict(os.environ, PYTHONPATH=f'{tmp_path}{os.pathsep}{ROOT}', OMP_NUM_THREADS='1')
    for key in ('POMP_TEST_SIGNAL_AT_ITER', 'STALL_AT', 'SAVE_ACTION', 'POMP_MM_DEBUG'):
        env.pop(key, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _pretrain(tmp_path, cfg, work, *args, expect_rc=0, **env):
    res = run_repo_tool('pretrain.py', cfg, '--work-dir', work, *args, expect_rc=expect_rc,
                        timeout=300, env=_env(tmp_path, **env))
    return res.stdout + res.stderr


def _ctx(work):
    return load_prompt(os.path.join(work, 'prompt_latest.pth'))


def _assert_preempted(out, work, signame, iteration, config):
    """The one line: signal, iteration, checkpoint path and the resume command."""
    lines = [ln for ln in out.splitlines() if 'preempted by' in ln]
    assert len(lines) == 1, out[-3000:]
    ckpt = os.path.join(work, f'iter_{iteration}.pth')
    assert lines[0].endswith(f'preempted by {signame} at iteration {iteration}: checkpoint '
                             f'{ckpt}; resume with: python {tool_path("pretrain.py")} {config} '
                             f'--work-dir {work} --resume'), lines[0]
    assert 'Traceback' not in out
    assert os.path.isfile(ckpt)
    assert open(os.path.join(work, 'last_checkpoint')).read() == ckpt
    assert load_prompt(os.path.join(work, f'prompt_iter_{iteration}.pth')).meta['iteration'] \
        == iteration
    assert not [f for f in os.listdir(work) if f.endswith('.tmp')]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """The image folder, and the uninterrupted 6-iteration run's work dir."""
    tmp = tmp_path_factory.mktemp('preempt')
    folder = str(tmp / 'images')
    write_image_folder(folder, IMAGE_CLASSES, 3, size=40, corrupt={('lamp', 1)})
    straight = tmp / 'straight'
    _pretrain(tmp, _config(tmp, folder), straight)
    return folder, straight


# ---------------------------------------------------------------- in-process units (fast)
def test_the_handler_only_sets_a_flag_and_a_third_ctrl_c_aborts():
    from pomp_mm import preemption
    previous = signal.getsignal(signal.SIGINT)
    preemption.install_signal_handlers()
    try:
        assert preemption.stop_requested() == 0
        os.kill(os.getpid(), signal.SIGUSR1)
        assert preemption.stop_requested() == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGTERM)  # a second request keeps the first signal
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        assert preemption.stop_requested() == signal.SIGUSR1
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # the handler runs at the next bytecode boundary
    finally:
        preemption.restore_signal_handlers()
    assert signal.getsignal(signal.SIGINT) is previous
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None) or \
        signal.getsignal(signal.SIGTERM) is not preemption._handler


def test_latest_checkpoint_follows_last_checkpoint_then_the_newest_file(tmp_path):
    from pomp_mm.preemption import latest_checkpoint
    work = tmp_path / 'w'
    work.mkdir()
    assert latest_checkpoint(str(work)) is None
    for i, name in enumerate(['iter_8.pth', 'epoch_1.pth', '.iter_9.pth.123.tmp', 'x.pth']):
        (work / name).write_bytes(b'x')
        os.utime(work / name, (1000 + i, 1000 + i))
    # no last_checkpoint: the newest checkpoint-named file (not temporary or other files)
    assert latest_checkpoint(str(work)) == str(work / 'epoch_1.pth')
    (work / 'last_checkpoint').write_text(str(work / 'iter_8.pth'))
    assert latest_checkpoint(str(work)) == str(work / 'iter_8.pth')
    # the work dir was moved: the file of that name here
    (work / 'last_checkpoint').write_text('/elsewhere/old_work/iter_8.pth')
    assert latest_checkpoint(str(work)) == str(work / 'iter_8.pth')
    (work / 'last_checkpoint').write_text('/elsewhere/iter_99.pth')  # gone: the newest
    assert latest_checkpoint(str(work)) == str(work / 'epoch_1.pth')


def test_resume_command_replaces_any_resume_option(monkeypatch):
    from pomp_mm.preemption import resume_command
    monkeypatch.delenv('TORCHELASTIC_RUN_ID', raising=False)
    assert resume_command(['tools/pretrain.py', 'c.py', '--resume', 'w/iter_4.pth',
                           '--cfg-options', 'a=1 b']) == \
        "python tools/pretrain.py c.py --cfg-options 'a=1 b' --resume"
    assert resume_command(['t.py', 'c.py', '--resume']) == 'python t.py c.py --resume'


# ---------------------------------------------------------------- end to end (subprocesses)
@pytest.mark.slow
def test_sigterm_mid_run_checkpoints_that_iteration_and_resumes_bit_for_bit(tmp_path, data):
    """SIGTERM after iteration 3 of 6 (checkpoints every 4): iter_3.pth and prompt_iter_3.pth,
    exit 143, one line; --resume ends with the uninterrupted run's prompt."""
    folder, straight = data
    cfg, work = _config(tmp_path, folder), tmp_path / 'work'
    out = _pretrain(tmp_path, cfg, work, expect_rc=128 + signal.SIGTERM,
                    POMP_TEST_SIGNAL_AT_ITER=3)
    _assert_preempted(out, str(work), 'SIGTERM', 3, cfg)
    assert not (work / 'iter_4.pth').exists()
    out = _pretrain(tmp_path, cfg, work, '--resume')
    assert 'resumed epoch: 0, iter: 3' in out
    a, b = _ctx(straight), _ctx(work)
    assert torch.equal(a.ctx, b.ctx) and b.meta['iteration'] == 6


@pytest.mark.slow
def test_sigterm_from_outside_to_the_whole_process_group_with_workers(tmp_path, data):
    """A SIGTERM from outside, sent to every process of the run as SLURM does (the
    DataLoader's 2 workers too): the workers survive it, the run stops after that iteration,
    and resumes to the uninterrupted prompt."""
    folder, straight = data
    cfg, work = _config(tmp_path, folder, num_workers=2), tmp_path / 'work'
    proc = subprocess.Popen([sys.executable, tool_path('pretrain.py'), cfg, '--work-dir',
                             str(work)], cwd=ROOT, env=_env(tmp_path, STALL_AT=2),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while not (work / 'stalled').exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-4000:]
    _assert_preempted(out, str(work), 'SIGTERM', 2, cfg)
    assert 'DataLoader worker' not in out
    _pretrain(tmp_path, cfg, work, '--resume')
    assert torch.equal(_ctx(straight).ctx, _ctx(work).ctx)


@pytest.mark.slow
@pytest.mark.parametrize('action', ['signal', 'kill'])
def test_signals_or_a_kill_during_the_checkpoint_write(tmp_path, data, action):
    """SIGUSR1 after iteration 5. 'signal': a second SIGTERM and a SIGINT arrive while the
    checkpoint is written: ignored, the checkpoint is complete, exit code that of SIGUSR1.
    'kill': SIGKILL halfway through the write: no iter_5.pth (half a file stays a temporary
    one), last_checkpoint still names iter_4.pth, and auto-resume from it is exact too."""
    folder, straight = data
    cfg, work = _config(tmp_path, folder), tmp_path / 'work'
    rc = 128 + signal.SIGUSR1 if action == 'signal' else -signal.SIGKILL
    out = _pretrain(tmp_path, cfg, work, expect_rc=rc, POMP_TEST_SIGNAL_AT_ITER='5:SIGUSR1',
                    SAVE_ACTION=action)
    if action == 'signal':
        _assert_preempted(out, str(work), 'SIGUSR1', 5, cfg)
        torch.load(work / 'iter_5.pth', map_location='cpu', weights_only=True)
    else:
        assert not (work / 'iter_5.pth').exists()
        assert [f for f in os.listdir(work) if f.startswith('.iter_5.pth')]
        assert open(work / 'last_checkpoint').read() == str(work / 'iter_4.pth')
    out = _pretrain(tmp_path, cfg, work, '--resume')
    assert f'resumed epoch: 0, iter: {5 if action == "signal" else 4}' in out
    assert torch.equal(_ctx(straight).ctx, _ctx(work).ctx)


@pytest.mark.slow
def test_epoch_based_run_resumes_mid_epoch_at_the_batch_it_stopped(tmp_path, data):
    """2 epochs of 6 iterations, SIGUSR1 after iteration 8 (2 batches into epoch 2): the
    resumed epoch skips those 2 batches (mmengine alone would rerun the epoch: 14
    iterations) and ends with the uninterrupted prompt."""
    folder, _ = data
    cfg = _config(tmp_path, folder, name='epochs', epochs=2)
    straight, work = tmp_path / 'straight', tmp_path / 'work'
    _pretrain(tmp_path, cfg, straight)
    out = _pretrain(tmp_path, cfg, work, expect_rc=128 + signal.SIGUSR1,
                    POMP_TEST_SIGNAL_AT_ITER='8:SIGUSR1')
    _assert_preempted(out, str(work), 'SIGUSR1', 8, cfg)
    out = _pretrain(tmp_path, cfg, work, '--resume')
    assert 'resuming epoch 2 at batch 3 of 6: the sampler skips the 2 batches done' in out
    a, b = _ctx(straight), _ctx(work)
    assert b.meta['iteration'] == 12 and b.meta['epoch'] == 2
    assert torch.equal(a.ctx, b.ctx)


def _torchrun(tmp_path, cfg, work, port, *args, expect_rc=0, **env):
    res = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node', '2',
         '--master-port', str(port), tool_path('pretrain.py'), cfg, '--launcher', 'pytorch',
         '--work-dir', str(work), *args],
        capture_output=True, text=True, cwd=ROOT, env=_env(tmp_path, **env), timeout=300)
    out = res.stdout + res.stderr
    assert (res.returncode == 0) == (expect_rc == 0), out[-4000:]
    return out


@pytest.mark.slow
def test_ddp_ranks_agree_on_the_iteration_and_resume_bit_for_bit(tmp_path, data):
    """torchrun, 2 ranks on gloo: only rank 0 gets SIGTERM (after iteration 2 of 4); both
    ranks stop after that same iteration, and the resumed run ends with the prompt of the
    uninterrupted DDP run."""
    folder, _ = data
    cfg = _config(tmp_path, folder, max_iters=4, batch_size=2)
    straight, work = tmp_path / 'straight', tmp_path / 'work'
    _torchrun(tmp_path, cfg, straight, 29531)
    out = _torchrun(tmp_path, cfg, work, 29532, expect_rc=1, POMP_TEST_SIGNAL_AT_ITER=2)
    assert out.count('preempted by SIGTERM at iteration 2: checkpoint') == 1, out[-4000:]
    assert 'exitcode  : 143' in out  # torchrun's report of the ranks
    assert 'terminate called' not in out
    assert open(work / 'last_checkpoint').read() == str(work / 'iter_2.pth')
    out = _torchrun(tmp_path, cfg, work, 29533, '--resume')
    assert 'resumed epoch: 0, iter: 2' in out
    assert torch.equal(_ctx(straight).ctx, _ctx(work).ctx)


# ---------------------------------------------------------------- missing inputs: one line
@pytest.fixture(scope='module')
def missing_input_runs(tmp_path_factory):
    """tools/pretrain.py, each run missing one input, all in one Python process (helpers.
    run_tool_cases; each stops before training) with the hub offline and its caches empty
    folders: a list of CompletedProcess, and the tmp folder."""
    tmp_path = tmp_path_factory.mktemp('missing_inputs')
    images = str(tmp_path / 'images')
    write_image_folder(images, IMAGE_CLASSES, 1, size=8)
    cfg = _config(tmp_path, images)
    work = ['--work-dir', str(tmp_path / 'w')]
    cases = [[cfg, *work, '--cfg-options', 'model.clip_model=ViT-B-16',
              'model.pretrained=openai'],
             [cfg, *work, '--cfg-options', f'model.pretrained={tmp_path / "ViT-B-16.pt"}'],
             [cfg, *work, '--cfg-options', 'train_dataloader.dataset.type=ImageNet21K',
              f'train_dataloader.dataset.data_root={tmp_path / "imagenet21k_resized"}',
              'train_dataloader.dataset.source=None'],
             [cfg, *work, '--cfg-options',
              f'train_dataloader.dataset.source={tmp_path / "no_list.csv"}'],
             [cfg, *work, '--resume', str(tmp_path / 'iter_4.pth')]]
    env = _env(tmp_path, HF_HUB_OFFLINE=1, HF_HOME=tmp_path / 'hf',
               XDG_CACHE_HOME=tmp_path / 'cache')
    runs = run_tool_cases([('pretrain.py', args) for args in cases], str(tmp_path / 'runs'),
                          cwd=ROOT, env=env, timeout=300)
    return runs, tmp_path


def _one_line_error(res, tmp_path):
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-4000:]
    assert 'Traceback' not in out, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith('pretrain.py: error: ') and \
        last.endswith('; see docs/usage.md#offline-missing-weights-prompts-or-data '
                      '(--debug for the traceback)'), last
    assert not (tmp_path / 'w' / 'last_checkpoint').exists()
    return last


def test_missing_clip_weights_with_the_hub_offline_is_one_line(missing_input_runs):
    """ViT-B-16 'openai' not in an empty cache, HF_HUB_OFFLINE=1: the tag, the key and the
    override, before the model or the data are built."""
    runs, tmp_path = missing_input_runs
    last = _one_line_error(runs[0], tmp_path)
    assert "CLIP weights 'openai' for ViT-B-16 are not on this machine" in last
    assert '--cfg-options model.pretrained=/path/ViT-B-16.pt' in last


def test_missing_weights_file_data_and_checkpoint_name_their_keys(missing_input_runs):
    """With the tiny local CLIP: a weights file, an ImageNet-21K root, an image list and a
    --resume checkpoint that are not there are each one line naming the key or option."""
    runs, tmp_path = missing_input_runs
    weights = str(tmp_path / 'ViT-B-16.pt')
    root = str(tmp_path / 'imagenet21k_resized')
    missing = str(tmp_path / 'no_list.csv')
    lines = [_one_line_error(res, tmp_path) for res in runs[1:4]]
    assert f"CLIP weights file '{weights}' not found" in lines[0]
    assert '--cfg-options model.pretrained=/path/ViT-B-16.pt' in lines[0]
    assert f"dataset folder '{root}' not found" in lines[1]
    assert 'train_dataloader.dataset.data_root=/path/imagenet21k_resized' in lines[1]
    assert f"image list not found: '{missing}' (train_dataloader.dataset.source in the " \
           'config); point it at a local copy (--cfg-options train_dataloader.dataset.' \
           'source=/path/no_list.csv)' in lines[2]
    res = runs[4]
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"pretrain.py: error: --resume '{tmp_path / 'iter_4.pth'}': no such checkpoint "
        '(--resume without a path resumes from the latest one in the work dir) (--debug for '
        'the traceback)')
