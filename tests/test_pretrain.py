import json
import math
import os
import subprocess
import sys

import pytest
import torch

from pomp_mm import load_prompt
from helpers import IMAGE_CLASSES, load_tool, run_repo_tool, tool_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = IMAGE_CLASSES


def _config(tmp_path, image_folder, max_iters=4, extra_model=None, batch_size=4,
            dataset_vocab=CLASSES, prompt_hook=True):
    model = dict(type='PompPretrainer', clip_model='tiny', vocabulary=CLASSES, n_ctx=4,
                 num_sampled=4, seed=3)
    model.update(extra_model or {})
    cfg = f"""
custom_imports = dict(imports=['pomp_mm', 'pomp_mm.pretrain'], allow_failed_imports=False)
model = {model!r}
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
    collate_fn=dict(type='collate_views'),
    dataset=dict(type='ImageList', source={image_folder!r}, num_views=2, image_size=32,
                 train=False, vocabulary={dataset_vocab!r}))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9))
# explicit end: stopping early at max_iters=2 must not reshape the schedule (an interrupted run)
param_scheduler = [dict(type='CosineAnnealingLR', T_max={max_iters}, by_epoch=False, begin=0,
                        end={max_iters})]
train_cfg = dict(type='IterBasedTrainLoop', max_iters={max_iters})
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False))
custom_hooks = {"[dict(type='PromptCheckpointHook', interval=2)]" if prompt_hook else '[]'}
randomness = dict(seed=0)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
"""
    path = tmp_path / f'cfg_{max_iters}.py'
    path.write_text(cfg)
    return str(path)


def _pretrain(*args, timeout=600, expect_rc=0):
    res = run_repo_tool('pretrain.py', *args, expect_rc=expect_rc, timeout=timeout)
    return res.stdout + res.stderr


def test_label_space_check_messages(caplog):
    from pomp_mm.pretrain import PompPretrainer
    model = PompPretrainer(clip_model='tiny', vocabulary=CLASSES, n_ctx=4, num_sampled=3)
    model.check_label_space(tuple(CLASSES))  # tuples (metainfo) and lists compare equal
    # a folder dataset without a vocabulary sorts its classes: index 0 differs
    with pytest.raises(ValueError, match=r"dataset label 0 is 'boat' but model vocabulary "
                                         r"class 0 is 'cat'"):
        model.check_label_space(sorted(CLASSES))
    with pytest.raises(ValueError, match=r"model vocabulary class 7 is 'shoe' but the dataset "
                                         r"has only 7 classes"):
        model.check_label_space(CLASSES[:7])
    with pytest.raises(ValueError, match=r"dataset label 8 is 'bus' but the model vocabulary "
                                         r"ends at 8 classes"):
        model.check_label_space(CLASSES + ['bus'])
    with caplog.at_level('WARNING', logger='pomp_mm.pretrain.model'):
        model.check_label_space(None)
    assert 'no metainfo["classes"]' in caplog.text


@pytest.mark.slow
def test_pretrain_refuses_a_dataset_with_another_class_order(tmp_path, image_folder):
    """A folder ImageList without a vocabulary sorts its classes, the model's are not: the run
    stops before the first step, naming the first differing label, even without the prompt
    hook in the config (tools/pretrain.py adds it)."""
    cfg = _config(tmp_path, image_folder, max_iters=1, dataset_vocab=None, prompt_hook=False)
    log = _pretrain(cfg, '--work-dir', str(tmp_path / 'w'), expect_rc=2)
    # a user's mistake: one line naming the labels (pomp_mm.cli), no traceback
    assert "pretrain.py: error: dataset label 0 is 'boat' but model vocabulary class 0 is " \
        "'cat'" in log
    assert 'Traceback' not in log
    assert not os.path.exists(tmp_path / 'w' / 'iter_1.pth')


@pytest.mark.slow
def test_pretrain_resume_is_exact_and_skips_bad_images(tmp_path, image_folder):
    cfg = _config(tmp_path, image_folder)
    straight, split = str(tmp_path / 'straight'), str(tmp_path / 'split')
    log = _pretrain(cfg, '--work-dir', straight)
    assert 'skipped_images' in log
    _pretrain(cfg, '--work-dir', split, '--cfg-options', 'train_cfg.max_iters=2')
    _pretrain(cfg, '--work-dir', split, '--resume')
    a = load_prompt(os.path.join(straight, 'prompt_latest.pth'))
    b = load_prompt(os.path.join(split, 'prompt_latest.pth'))
    assert torch.equal(a.ctx, b.ctx)
    start = load_prompt(os.path.join(straight, 'prompt_iter_2.pth'))
    assert not torch.equal(a.ctx, start.ctx)  # it did learn something between 2 and 4
    meta = a.meta
    assert meta['train_vocabulary_size'] == len(CLASSES) and meta['loss']['num_sampled'] == 4
    assert meta['iteration'] == 4
    assert os.path.getsize(os.path.join(straight, 'prompt_latest.pth')) < 10_000
    assert os.path.isfile(os.path.join(straight, 'iter_4.pth'))  # full resume checkpoint


@pytest.mark.slow
def test_seeded_runs_are_bitwise_identical(tmp_path, image_folder):
    cfg = _config(tmp_path, image_folder, max_iters=2)
    _pretrain(cfg, '--work-dir', str(tmp_path / 'a'))
    _pretrain(cfg, '--work-dir', str(tmp_path / 'b'))
    a = load_prompt(str(tmp_path / 'a' / 'prompt_latest.pth'))
    b = load_prompt(str(tmp_path / 'b' / 'prompt_latest.pth'))
    assert torch.equal(a.ctx, b.ctx)


@pytest.mark.slow
def test_official_contrast_trains_through_the_runner_and_resumes_exactly(tmp_path,
                                                                         image_folder):
    """contrast='per_image' through tools/pretrain.py: it trains, records its contrast in
    the prompt, and 2 iterations + resume + 2 give the 4-iteration prompt bit for bit."""
    extra = {'contrast': 'per_image', 'correction': 'log10', 'mask_duplicate_names': False}
    cfg4 = _config(tmp_path, image_folder, max_iters=4, extra_model=extra)
    _pretrain(cfg4, '--work-dir', str(tmp_path / 'straight'))
    straight = load_prompt(str(tmp_path / 'straight' / 'prompt_latest.pth'))
    assert straight.meta['loss']['contrast'] == 'per_image' and straight.meta['steps'] == 4
    resumed = str(tmp_path / 'resumed')
    _pretrain(cfg4, '--work-dir', resumed, '--cfg-options', 'train_cfg.max_iters=2')
    _pretrain(cfg4, '--work-dir', resumed, '--resume')
    again = load_prompt(os.path.join(resumed, 'prompt_latest.pth'))
    assert torch.equal(again.ctx, straight.ctx)


def test_only_the_prompt_trains():
    from pomp_mm.pretrain import PompPretrainer
    torch.manual_seed(0)
    model = PompPretrainer(clip_model='tiny', vocabulary=CLASSES, n_ctx=4, num_sampled=3)
    model.train()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ['text_encoder.prompt_learner.ctx']
    images = torch.randn(2, 2, 3, 32, 32)
    out = model(inputs=images, labels=torch.tensor([1, 5]), mode='loss')
    out['loss'].backward()
    assert out['num_contrasted'].item() == 3
    assert not model.visual.training and not model.text_encoder.tower.training
    # the gradient is the loss's: central differences on its largest entries (same step, so
    # the same sampled classes)
    ctx = model.prompt_learner.ctx
    grad = ctx.grad.clone()
    for flat in grad.abs().flatten().topk(3).indices.tolist():
        i, j = divmod(flat, grad.shape[1])
        losses = []
        for sign in (1, -1):
            with torch.no_grad():
                ctx[i, j] += sign * 1e-3
                model.forward_count.zero_()
                losses.append(float(model(inputs=images, labels=torch.tensor([1, 5]))['loss']))
                ctx[i, j] -= sign * 1e-3
        assert (losses[0] - losses[1]) / 2e-3 == pytest.approx(float(grad[i, j]), rel=0.05)


def test_full_softmax_baseline_matches_cross_entropy():
    """num_sampled=None contrasts all N classes: plain cross-entropy over the vocabulary."""
    from pomp_mm.pretrain import PompPretrainer
    torch.manual_seed(0)
    model = PompPretrainer(clip_model='tiny', vocabulary=CLASSES, n_ctx=4,
                           num_sampled=None, correction='none')
    images, labels = torch.randn(3, 1, 3, 32, 32), torch.tensor([0, 7, 2])
    with torch.no_grad():
        loss = model(inputs=images, labels=labels, mode='loss')['loss']
        img = model.encode_images(images)
        txt = model.text_encoder.encode_names(CLASSES)
        logits = model.text_encoder.tower.logit_scale.exp() * img @ txt.T
        ref = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=0)


def test_padded_prompts_give_the_packed_loss_and_gradient():
    """attention='padded' (own tokens padded to the step's longest) and 'varlen' (one
    attention call per layer) are only speed/memory trades: same loss and prompt gradient as
    'grouped'."""
    from pomp_mm.pretrain import PompPretrainer
    names = ['cat', 'hot-air balloon', 'golden retriever dog', 'cup', 'a very long class name']
    results = []
    for mode in ('grouped', 'padded', 'varlen'):
        torch.manual_seed(0)
        model = PompPretrainer(clip_model='tiny', vocabulary=names, n_ctx=4, num_sampled=4,
                               attention=mode)
        assert model.text_encoder.attention_mode() == mode
        images = torch.randn(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        loss = model(inputs=images, labels=torch.tensor([1, 4]), mode='loss')['loss']
        loss.backward()
        results.append((loss.detach(), model.prompt_learner.ctx.grad.clone()))
    loss_a, grad_a = results[0]
    for loss_b, grad_b in results[1:]:
        torch.testing.assert_close(loss_b, loss_a, atol=1e-5, rtol=0)
        torch.testing.assert_close(grad_b, grad_a, atol=1e-4 * grad_a.abs().max().item(),
                                   rtol=0)


def test_hard_mode_trains():
    from pomp_mm.pretrain import PompPretrainer
    torch.manual_seed(0)
    model = PompPretrainer(clip_model='tiny', vocabulary=CLASSES, n_ctx=4, num_sampled=3,
                           sampling='hard', hard_refresh_interval=2)
    opt = torch.optim.SGD([model.prompt_learner.ctx], lr=0.1)
    for step in range(3):
        if step == 2:
            ctx_at_refresh = model.prompt_learner.ctx.detach().clone()
        out = model(inputs=torch.randn(2, 1, 3, 32, 32), labels=torch.tensor([0, 1]))
        opt.zero_grad()
        out['loss'].backward()
        opt.step()
    # the bank is built at step 0 (none yet) and refreshed at step 2 (interval 2): it holds
    # every class embedded with the prompt of that step
    assert model.sampler.last_refresh_step == 2 and model.sampler.bank.shape == (8, 32)
    trained = model.prompt_learner.ctx.detach().clone()
    with torch.no_grad():
        model.prompt_learner.ctx.copy_(ctx_at_refresh)
        want = model.text_encoder.encode_names(CLASSES)
        model.prompt_learner.ctx.copy_(trained)
    torch.testing.assert_close(model.sampler.bank, want, atol=1e-6, rtol=0)
    assert not torch.equal(ctx_at_refresh, trained)
    state = model.state_dict()
    assert int(state['forward_count']) == 3 and int(state['bank_step']) == 2
    # a resumed model hands the saved bank back to its sampler
    torch.manual_seed(0)
    resumed = PompPretrainer(clip_model='tiny', vocabulary=CLASSES, n_ctx=4, num_sampled=3,
                             sampling='hard', hard_refresh_interval=2)
    resumed.load_state_dict(state)
    resumed._sync_bank()
    torch.testing.assert_close(resumed.sampler.bank, model.sampler.bank)
    assert resumed.sampler.last_refresh_step == 2


RANK_HOOK = '''
import json, os
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RecordSamplesHook(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        path = os.path.join(runner.work_dir, f'rank{runner.rank}.jsonl')
        with open(path, 'a') as f:
            f.write(json.dumps({'iter': runner.iter,
                                'class_ids': model.last_class_ids.tolist(),
                                'ctx': model.prompt_learner.ctx.detach().flatten()[:8].tolist()})
                    + '\\n')
'''


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path, image_folder):
    """torchrun, 2 ranks, gloo: each rank draws its own negatives; the prompt stays equal."""
    (tmp_path / 'rank_hook.py').write_text(RANK_HOOK)
    cfg = _config(tmp_path, image_folder, max_iters=3, batch_size=2)
    text = open(cfg).read().replace(
        "custom_imports = dict(imports=['pomp_mm', 'pomp_mm.pretrain']",
        "custom_imports = dict(imports=['pomp_mm', 'pomp_mm.pretrain', 'rank_hook']")
    text = text.replace("custom_hooks = [", "custom_hooks = [dict(type='RecordSamplesHook'), ")
    open(cfg, 'w').write(text)
    work = tmp_path / 'ddp'
    env = dict(os.environ, PYTHONPATH=f'{tmp_path}:{ROOT}', OMP_NUM_THREADS='1')
    res = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node', '2',
         '--master-port', '29517', tool_path('pretrain.py'), cfg,
         '--launcher', 'pytorch', '--work-dir', str(work)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'terminate called' not in res.stderr  # the process group is closed before exit
    rows = {r: [json.loads(line) for line in open(work / f'rank{r}.jsonl')] for r in (0, 1)}
    assert len(rows[0]) == len(rows[1]) == 3
    negatives_differ = False
    for a, b in zip(rows[0], rows[1]):
        assert a['ctx'] == b['ctx']  # DDP keeps the prompt identical on every rank
        negatives_differ |= a['class_ids'] != b['class_ids']
    assert negatives_differ
    assert load_prompt(str(work / 'prompt_latest.pth')).meta['iteration'] == 3


@pytest.mark.slow
def test_benchmark_pretrain_quick_counts_unpadded_positions():
    """The benchmark's smoke run prints both tables and the targets; its token-position column
    is the shared prefix once plus every sampled class's own tokens (no padding)."""
    _vocabulary = load_tool('benchmarks/pretrain')._vocabulary
    res = subprocess.run([sys.executable, tool_path('benchmarks/pretrain.py'),
                          '--quick', '--steps', '1', '--large-classes', '1500'],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
            for line in res.stdout.splitlines() if line.startswith('| ') and '---' not in line}
    full = rows['full softmax (CoOp)']
    assert full[:2] == ['-', '1000']
    from open_clip.tokenizer import SimpleTokenizer
    tok = SimpleTokenizer()
    n_ctx = 16
    own = sum(len(tok.encode(' '.join(['X'] * n_ctx) + f' {name}.')) + 1 - n_ctx
              for name in _vocabulary('random', 1000).names)
    assert int(full[2].replace(',', '')) == n_ctx + 1 + own
    assert int(rows['POMP'][2].replace(',', '')) < int(full[2].replace(',', '')) / 4
    assert rows['1,500'][0] == '128'  # part (2): K=128 embedded at the larger N
    for target in ('memory ratio', 'time ratio', 'N=1,500 vs N=1,000'):
        assert target in res.stdout, target


@pytest.mark.slow
def test_benchmark_official_column_quick():
    """--official prints one row per (K, n_ctx) with both methods' times and memory, the
    ratios pomp_mm / official and the target line (text side 8x, full step 5x)."""
    res = subprocess.run([sys.executable, tool_path('benchmarks/pretrain.py'),
                          '--quick', '--official', '--official-n-ctx', '4', '--steps', '1',
                          '--large-classes', '600'],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [[c.strip() for c in line.split('|')[1:-1]] for line in res.stdout.splitlines()
            if line.startswith('| 128 |')]
    assert len(rows) == 1 and rows[0][1] == '4'
    ours, theirs, ratio = (float(v) for v in rows[0][2:5])
    half = 5e-4  # every cell is printed to 3 decimals: bound the ratio the cells allow
    assert (ours - half) / (theirs + half) - half <= ratio <= (ours + half) / (theirs - half) + half
    assert 'N=600' in res.stdout and 'Targets (K=128, n_ctx 4, N=600)' in res.stdout
    assert 'text side at least 8x faster' in res.stdout
    assert 'full step at least 5x faster' in res.stdout
    assert 'official' in res.stderr and 'pomp_mm' in res.stderr  # both steps ran


@pytest.mark.parametrize('bf16,dtype,scale', [(True, 'bfloat16', 1.0),
                                              (False, 'float16', 'dynamic')])
def test_amp_picks_bf16_where_supported(monkeypatch, bf16, dtype, scale):
    """--amp: bfloat16 (no loss scaling) on GPUs that have it, else float16 + dynamic scaling;
    the choice is logged. (The wrapper itself needs CUDA: only the config is checked here.)"""
    import argparse

    import mmengine.logging
    from mmengine.config import Config
    from pomp_mm._runner import apply_train_args
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: bf16)
    logged = []
    monkeypatch.setattr(mmengine.logging, 'print_log', lambda msg, **kw: logged.append(msg))
    cfg = Config(dict(optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1))))
    apply_train_args(cfg, argparse.Namespace(amp=True, resume=None))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == dtype and cfg.optim_wrapper.loss_scale == scale
    assert logged == [f'--amp: mixed precision in {dtype} (loss_scale={scale!r})']
    # without --amp nothing changes
    plain = Config(dict(optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1))))
    apply_train_args(plain, argparse.Namespace(amp=False, resume=None))
    assert 'type' not in plain.optim_wrapper


def _dassl_lrs(max_epoch, lr=0.002, warmup_lr=1e-5):
    """Per-epoch LRs of Dassl's cosine + one constant warm-up epoch (WARMUP_RECOUNT): the
    warm-up wrapper hands over to a CosineAnnealingLR(T_max=MAX_EPOCH) that has not stepped
    yet, so epoch e >= 1 runs at cosine step e - 1."""
    return [warmup_lr] + [lr * (1 + math.cos(math.pi * (e - 1) / max_epoch)) / 2
                          for e in range(1, max_epoch)]


@pytest.mark.parametrize('name,n_ctx,epochs', [
    ('pomp_in21k-p_vit-b16.py', 4, 5), ('pomp_in21k-p_vit-b16_ctx16_ep20.py', 16, 20),
    ('pomp_in21k_vit-b16.py', 16, 20), ('coop_in21k-p_vit-b16.py', 4, 5),
    ('pomp_in21k-p_vit-b16_official.py', 4, 5),
    ('pomp_in21k-p_vit-b16_ctx16_ep20_official.py', 16, 20)])
def test_config_lr_schedule_is_dassls(name, n_ctx, epochs):
    """The configs' param schedulers, stepped once per epoch as mmengine's ParamSchedulerHook
    does, give Dassl's per-epoch LRs for every epoch (and do not change within an epoch)."""
    from mmengine.config import Config
    from mmengine.optim.scheduler import _ParamScheduler  # noqa: F401  registers schedulers
    from mmengine.registry import PARAM_SCHEDULERS
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'pretrain', name))
    assert cfg.model.n_ctx == n_ctx and cfg.train_cfg.max_epochs == epochs
    assert all(s.by_epoch and not s.get('convert_to_iter_based') for s in cfg.param_scheduler)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], **{
        k: v for k, v in cfg.optim_wrapper.optimizer.items() if k != 'type'})
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=opt)) for s in cfg.param_scheduler]
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]['lr'])
        opt.step()
        for s in schedulers:
            s.step()
    assert lrs == pytest.approx(_dassl_lrs(epochs), rel=1e-12, abs=0)


@pytest.mark.parametrize('ours,official', [
    ('pomp_in21k-p_vit-b16.py', 'pomp_in21k-p_vit-b16_official.py'),
    ('pomp_in21k-p_vit-b16_ctx16_ep20.py', 'pomp_in21k-p_vit-b16_ctx16_ep20_official.py')])
def test_official_configs_differ_from_ours_only_where_the_docs_say(ours, official):
    """The official recipes are ours with the official step (per-image contrast, log10, no
    twin masking), seed 42 and the few-shot draw of seed 42; nothing else differs."""
    from mmengine.config import Config
    a = Config.fromfile(os.path.join(ROOT, 'configs', 'pretrain', ours)).to_dict()
    b = Config.fromfile(os.path.join(ROOT, 'configs', 'pretrain', official)).to_dict()

    def flat(d, prefix=''):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f'{prefix}{k}.') if isinstance(v, dict) else {prefix + k: v})
        return out
    fa, fb = flat(a), flat(b)
    differ = {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}
    assert differ == {'model.contrast', 'model.correction', 'model.mask_duplicate_names',
                      'train_dataloader.dataset.seed', 'train_dataloader.dataset.split_file'}
    assert (fb['model.contrast'], fb['model.correction'], fb['model.mask_duplicate_names']) == \
        ('per_image', 'log10', False)
    assert fb['train_dataloader.dataset.seed'] == fb['model.seed'] == fb['randomness.seed'] == 42
    assert fb['model.num_sampled'] == 1000 and fb['train_dataloader.batch_size'] == 32
    assert fb['optim_wrapper.optimizer.lr'] == 0.002 and fb['train_dataloader.dataset.shots'] == 16
    docs = open(os.path.join(ROOT, 'docs', 'pretraining.md'), encoding='utf-8').read()
    assert official in docs


def test_prompt_hook_checks_labels_and_flags_other_preprocessing():
    """before_train: the label-space check runs on the training dataset's classes, and a
    dataset normalised unlike the CLIP tower (OpenAI mean/std for a SigLIP-like model) is
    logged as a warning."""
    from types import SimpleNamespace

    from pomp_mm.pretrain import PromptCheckpointHook
    from pomp_mm.pretrain.data import resolve_preprocess
    checked, warnings = [], []
    model = SimpleNamespace(check_label_space=checked.append,
                            visual=SimpleNamespace(preprocess_cfg=dict(mean=(0.5,) * 3,
                                                                       std=(0.5,) * 3)))
    dataset = SimpleNamespace(metainfo={'classes': ('a', 'b')}, preprocess=resolve_preprocess())
    runner = SimpleNamespace(model=model, train_dataloader=SimpleNamespace(dataset=dataset),
                             logger=SimpleNamespace(warning=warnings.append))
    PromptCheckpointHook().before_train(runner)
    assert checked == [('a', 'b')]
    assert len(warnings) == 1 and 'mean (0.48145466' in warnings[0]
    assert '(model: (0.5, 0.5, 0.5))' in warnings[0]
    dataset.preprocess = resolve_preprocess(model.visual.preprocess_cfg)
    PromptCheckpointHook().before_train(runner)
    assert len(warnings) == 1 and len(checked) == 2
    PromptCheckpointHook(check_labels=False).before_train(runner)
    assert len(checked) == 2


def test_pretrain_refuses_max_epochs_without_its_schedule():
    """--cfg-options train_cfg.max_epochs=N alone would keep the configured cosine."""
    from mmengine.config import Config

    from pomp_mm._runner import check_schedule
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'pretrain', 'pomp_in21k-p_vit-b16.py'))
    check_schedule(cfg)  # as shipped: fine
    cfg.merge_from_dict({'train_cfg.max_epochs': 8})
    with pytest.raises(ValueError, match='ends at epoch 5 but train_cfg.max_epochs is 8'):
        check_schedule(cfg)


@pytest.mark.slow
def test_frequency_sampling_takes_class_counts_from_the_dataset(tmp_path, image_folder):
    """No class_counts in the config: tools/pretrain.py trains with the dataset's own counts
    (lamp has a corrupt image but 3 files; counts are of listed images)."""
    import torch

    from pomp_mm.pretrain import PompPretrainer
    cfg = _config(tmp_path, image_folder, max_iters=2, extra_model=dict(sampling='frequency'))
    out = _pretrain(cfg, '--work-dir', str(tmp_path / 'w'))
    assert 'frequency sampling: class counts from the training dataset (24 images, 8 of 8 ' \
           'classes present)' in out
    model = PompPretrainer(clip_model='tiny', vocabulary=CLASSES, n_ctx=4, num_sampled=4,
                           sampling='frequency')
    with pytest.raises(RuntimeError, match="sampling='frequency' has no class_counts"):
        model.compute_loss(torch.randn(2, 32), torch.tensor([0, 1]), 1)
    from pomp_mm.pretrain import ImageList
    counts = ImageList(image_folder, vocabulary=CLASSES, image_size=32).class_counts
    model.set_class_counts(counts)
    assert model.sampler.class_counts.tolist() == [float(c) for c in counts]
    assert not model.counts_pending


def test_each_step_draws_other_negatives():
    """The per-step seed depends on the step: the same batch gets other negatives at the next
    step (with a step-independent seed every step would contrast the same classes)."""
    from pomp_mm.pretrain import PompPretrainer
    vocab = [f'class {i}' for i in range(200)]
    model = PompPretrainer(clip_model='tiny', vocabulary=vocab, n_ctx=4, num_sampled=20,
                           seed=0)
    feats = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    drawn = []
    for _ in range(3):
        with torch.no_grad():
            model.compute_loss(feats, torch.tensor([3, 7]), 1)
        drawn.append(set(model.last_class_ids[2:].tolist()))
    assert drawn[0] != drawn[1] and drawn[1] != drawn[2]
    again = PompPretrainer(clip_model='tiny', vocabulary=vocab, n_ctx=4, num_sampled=20, seed=0)
    with torch.no_grad():
        again.compute_loss(feats, torch.tensor([3, 7]), 1)
    assert set(again.last_class_ids[2:].tolist()) == drawn[0]  # and a rerun draws the same


def test_ddp_does_not_broadcast_the_hard_mode_bank(tmp_path):
    """The N x D class bank stays out of DDP's per-forward buffer broadcast (each rank computes
    the same one); the other buffers are still synchronised."""
    import torch.distributed as dist

    from pomp_mm.pretrain import PompPretrainer
    model = PompPretrainer(clip_model='tiny', vocabulary=CLASSES, n_ctx=4, num_sampled=4,
                           sampling='hard')
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0,
                            world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        synced = {b.data_ptr() for b in ddp.modules_buffers}
    finally:
        dist.destroy_process_group()
    assert model.class_bank.numel() and model.class_bank.data_ptr() not in synced
    assert model.forward_count.data_ptr() in synced


STALL_HOOK = '''
import os, time
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class StallHook(Hook):
    """Stop moving after iteration STALL_AFTER (only where that variable is set)."""
    priority = 'LOWEST'  # after the checkpoint hook has saved this iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == int(os.environ.get('STALL_AFTER', '0')):
            open(os.path.join(runner.work_dir, 'stalled'), 'w').close()
            time.sleep(600)
'''


@pytest.mark.slow
def test_resume_checkpoints_hold_the_prompt_not_clip_and_survive_sigkill(tmp_path,
                                                                          image_folder):
    """Resume checkpoints keep what training changes (prompt, optimizer, schedulers, step) and
    the CLIP fingerprint, not the frozen towers; a run killed with SIGKILL resumes to the
    uninterrupted run's prompt, bit for bit; another CLIP is refused."""
    import signal
    import time

    from pomp_mm.pretrain import PompPretrainer
    (tmp_path / 'stall_hook.py').write_text(STALL_HOOK)
    cfg = _config(tmp_path, image_folder, max_iters=6)
    text = open(cfg).read().replace(
        "custom_imports = dict(imports=['pomp_mm', 'pomp_mm.pretrain']",
        "custom_imports = dict(imports=['pomp_mm', 'pomp_mm.pretrain', 'stall_hook']")
    open(cfg, 'w').write(text.replace("custom_hooks = [",
                                      "custom_hooks = [dict(type='StallHook'), "))
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    env = dict(os.environ, PYTHONPATH=f'{tmp_path}:{ROOT}', STALL_AFTER='0')
    res = subprocess.run([sys.executable, tool_path('pretrain.py'), cfg,
                          '--work-dir', str(straight)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    env['STALL_AFTER'] = '4'
    proc = subprocess.Popen([sys.executable, tool_path('pretrain.py'), cfg,
                             '--work-dir', str(killed)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / 'stalled').exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / 'iter_4.pth').exists() and not (killed / 'iter_6.pth').exists()
    env['STALL_AFTER'] = '0'
    res = subprocess.run([sys.executable, tool_path('pretrain.py'), cfg,
                          '--work-dir', str(killed), '--resume'], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    a = load_prompt(str(straight / 'prompt_latest.pth'))
    b = load_prompt(str(killed / 'prompt_latest.pth'))
    assert torch.equal(a.ctx, b.ctx) and b.meta['iteration'] == 6

    ckpt = torch.load(straight / 'iter_6.pth', map_location='cpu', weights_only=True)
    state = ckpt['state_dict']
    assert sorted(state) == ['bank_step', 'class_bank', 'clip_fingerprint', 'forward_count',
                             'text_encoder.prompt_learner.ctx']
    assert {'optimizer', 'param_schedulers', 'message_hub'} <= set(ckpt)
    assert os.path.getsize(straight / 'iter_6.pth') < 64 * 1024  # the tiny CLIP alone: ~2 MB
    torch.manual_seed(123)  # other random CLIP weights than the run's
    other = PompPretrainer(clip_model='tiny', vocabulary=CLASSES, n_ctx=4, num_sampled=4)
    with pytest.raises(ValueError, match='trained with other CLIP weights'):
        other.load_state_dict(state)


def test_a_checkpoint_of_the_old_step_count_name_resumes_its_count():
    """Checkpoints written before the rename hold ``step_count``: it loads as forward_count
    (the count seeds each forward pass's negatives, so resuming must keep it)."""
    from pomp_mm.pretrain import PompPretrainer
    torch.manual_seed(0)
    model = PompPretrainer(clip_model='tiny', vocabulary=CLASSES, n_ctx=4, num_sampled=4)
    state = model.state_dict()
    state['step_count'] = torch.tensor(41)
    del state['forward_count']
    torch.manual_seed(0)
    fresh = PompPretrainer(clip_model='tiny', vocabulary=CLASSES, n_ctx=4, num_sampled=4)
    result = fresh.load_state_dict(state)
    assert int(fresh.forward_count) == 41 and not result.missing_keys
    assert not result.unexpected_keys


@pytest.mark.slow
@pytest.mark.parametrize('family', ['transformers', 'siglip'])
def test_each_tower_family_trains_through_the_runner_and_resumes_exactly(tmp_path, image_folder,
                                                                        request, family):
    """tools/pretrain.py on a tiny Hugging Face CLIP folder and a tiny SigLIP-style config
    (bidirectional text tower, HF tokenizer folder): 4 iterations straight equal
    2 + resume + 2 bit for bit (open_clip CLIP towers: the resume tests above)."""
    if family == 'siglip':
        from pomp_mm.testing import tiny_siglip_config
        clip_model = tiny_siglip_config(request.getfixturevalue('siglip_tokenizer_folder'))
    else:
        clip_model = 'transformers:' + request.getfixturevalue('hf_clip_folder')
    cfg = _config(tmp_path, image_folder, extra_model=dict(clip_model=clip_model))
    straight, split = str(tmp_path / 'straight'), str(tmp_path / 'split')
    _pretrain(cfg, '--work-dir', straight)
    _pretrain(cfg, '--work-dir', split, '--cfg-options', 'train_cfg.max_iters=2')
    _pretrain(cfg, '--work-dir', split, '--resume')
    a = load_prompt(os.path.join(straight, 'prompt_latest.pth'))
    b = load_prompt(os.path.join(split, 'prompt_latest.pth'))
    assert torch.equal(a.ctx, b.ctx) and a.meta['iteration'] == 4
    start = load_prompt(os.path.join(straight, 'prompt_iter_2.pth'))
    assert not torch.equal(a.ctx, start.ctx)
    assert a.ctx.shape == (4, 64)
