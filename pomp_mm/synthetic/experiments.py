"""The world's experiments through the real tools: render and cache a set, pre-train a prompt,
evaluate prompts, summarise, and keep a resumable record of runs.

Every training and evaluation runs the repository's command-line tool (``tools/pretrain.py``,
``tools/cache_features.py``, ``tools/eval_classification.py``) in a child process, so an
experiment exercises the code path a user runs. The experiment tools in ``tools/synthetic/``
are command lines over this module.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, TextIO

from ..fileio import atomic_write_json

__all__ = ['ToolError', 'REPO_ROOT', 'POMP_CONFIG', 'POMP_VIT_CONFIG', 'COOP_CONFIG', 'METHODS',
           'tool_path', 'run_tool', 'epoch_options', 'prepare_set', 'train_prompt', 'evaluate',
           'per_class', 'summarise', 'intervals_report', 'format_results', 'iter_time',
           'load_state', 'save_state', 'render_set', 'cache_set', 'clip_options', 'Stages',
           'training_progress']

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POMP_CONFIG = os.path.join(REPO_ROOT, 'configs', 'pretrain', 'pomp_synthetic.py')
POMP_VIT_CONFIG = os.path.join(REPO_ROOT, 'configs', 'pretrain', 'pomp_synthetic_vit.py')
COOP_CONFIG = os.path.join(REPO_ROOT, 'configs', 'pretrain', 'coop_synthetic-1k.py')
#: the rows ``tools/eval_classification.py`` adds on its own -> the names reports use
METHODS = {'hand prompt': 'hand', 'template ensemble': 'ensemble'}


class ToolError(RuntimeError):
    """A tool run by an experiment failed; the message names the command and its log's tail."""


def tool_path(name: str) -> str:
    """``tools/<name>`` of the checkout pomp_mm runs from (``name`` may hold a subfolder)."""
    path = os.path.join(REPO_ROOT, 'tools', name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path} not found: the synthetic experiments run the tools of '
                                'a pomp_mm checkout (pip install -e <clone>)')
    return path


def run_tool(argv: Sequence[str], log: Optional[str] = None,
             watch: Optional[Callable[[str], None]] = None) -> Dict[str, float]:
    """Run ``python tools/<argv[0]> argv[1:]`` from the repository root, its output to ``log``
    (or the console); returns its wall time (s) and peak resident memory (MB).

    Args:
        watch: Called with each new line of ``log`` while the tool runs (progress bars).

    Raises:
        ToolError: the tool failed; the message holds the command and the log's last lines.
    """
    cmd = [sys.executable, tool_path(argv[0])] + [str(a) for a in argv[1:]]
    start = time.perf_counter()
    out = open(log, 'w', encoding='utf-8') if log else None
    try:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out,
                                stderr=subprocess.STDOUT if out else None)
        # wait4 rather than wait: it also reports the child's peak memory
        status, usage = _wait(proc.pid, log if watch else None, watch)
        code = os.waitstatus_to_exitcode(status)
    finally:
        if out:
            out.close()
    if code:
        tail = ''
        if log:
            with open(log, encoding='utf-8', errors='replace') as f:
                tail = f'\nlast lines of {log}:\n' + ''.join(f.readlines()[-30:])
        raise ToolError(f'{" ".join(cmd)} failed with exit code {code}{tail}')
    return {'seconds': time.perf_counter() - start, 'peak_rss_mb': usage.ru_maxrss / 1024}


def _wait(pid: int, log: Optional[str], watch: Optional[Callable[[str], None]]):
    if log is None:
        _, status, usage = os.wait4(pid, 0)
        return status, usage
    offset = 0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        with open(log, encoding='utf-8', errors='replace') as f:
            f.seek(offset)
            new = f.read()
        # a line is whole once its newline is written (tqdm's \r updates count as lines too)
        cut = max(new.rfind('\n'), new.rfind('\r')) + 1
        offset += len(new[:cut].encode('utf-8'))
        for line in re.split(r'[\r\n]+', new[:cut]):
            if line:
                watch(line)
        if done:
            return status, usage
        time.sleep(0.5)


def epoch_options(epochs: Optional[int]) -> List[str]:
    """``--cfg-options`` that set the pre-training configs' epochs and their cosine schedule."""
    if epochs is None:
        return []
    return [f'train_cfg.max_epochs={epochs}', f'param_scheduler.1.T_max={epochs}',
            f'param_scheduler.1.end={epochs}']


def _vocab_file(path: str, classes) -> str:
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(c.id + '\n' for c in classes)
    return path


def render_set(out_dir: str, classes, shots: int, seed: int, progress: bool = False,
               domain: str = 'photo') -> str:
    """Render a pre-training set (``shots`` images of each class); returns its CSV."""
    from .datasets import write_pretrain_set
    return write_pretrain_set(out_dir, classes, shots, seed, progress=progress, domain=domain)


def clip_options(model_name: Optional[str]) -> List[str]:
    """``--cfg-options`` that put world CLIP ``model_name`` (its committed, checked weights)
    into a pre-training config; none for None (the config's own CLIP)."""
    if model_name is None:
        return []
    from .world_clip import asset_path, world_clip_weights
    weights = world_clip_weights(asset_path(model_name, '.pt'),
                                 asset_path(model_name, '.card.json'))
    return [f'model.clip_model={model_name}', f'model.pretrained={weights}']


def cache_set(csv_path: str, classes, config: str, full_vocab: Optional[str],
              log: Optional[str] = None, model_name: Optional[str] = None) -> Dict[str, str]:
    """Cache the image features of a :func:`render_set` set with ``tools/cache_features.py``.

    Returns:
        ``{'cache_dir': feature cache folder, 'vocabulary': full_vocab or a class-id file}``.
    """
    out_dir = os.path.dirname(csv_path)
    vocab = full_vocab or _vocab_file(os.path.join(out_dir, 'classes.txt'), classes)
    features = os.path.join(out_dir, 'features')
    options = [f'train_dataloader.dataset.source={csv_path}',
               f'train_dataloader.dataset.vocabulary={vocab}', f'model.vocabulary={vocab}']
    options += clip_options(model_name)
    run_tool(['cache_features.py', config, '--out-dir', features, '--batch-size', '256',
              '--cfg-options'] + options, log)
    return {'cache_dir': features, 'vocabulary': vocab}


def prepare_set(out_dir: str, classes, shots: int, seed: int, config: str,
                full_vocab: Optional[str], log_dir: str, quiet: bool,
                domain: str = 'photo') -> Dict[str, str]:
    """:func:`render_set` then :func:`cache_set`; with ``quiet`` the tool's output goes to
    ``log_dir/cache_<set>.log``."""
    csv_path = render_set(out_dir, classes, shots, seed, progress=not quiet, domain=domain)
    log = os.path.join(log_dir, f'cache_{os.path.basename(out_dir)}.log') if quiet else None
    return cache_set(csv_path, classes, config, full_vocab, log)


def train_prompt(config: str, work_dir: str, data: Mapping[str, str], seed: int,
                 options: Sequence[str] = (), quiet: bool = False, log: Optional[str] = None,
                 watch: Optional[Callable[[str], None]] = None) -> Dict[str, float]:
    """``tools/pretrain.py`` with ``config``'s ``_cached`` twin on a :func:`prepare_set` set;
    the prompt lands in ``work_dir/prompt_latest.pth``. The tool's output goes to ``log``, else
    with ``quiet`` to ``work_dir/pretrain.log``. Returns :func:`run_tool`'s figures."""
    cached = config.replace('.py', '_cached.py')
    argv = ['pretrain.py', cached, '--work-dir', work_dir, '--cfg-options',
            f'train_dataloader.dataset.cache_dir={data["cache_dir"]}',
            f'model.vocabulary={data["vocabulary"]}', f'model.seed={seed}',
            f'randomness.seed={seed}'] + list(options)
    os.makedirs(work_dir, exist_ok=True)
    log = log or (os.path.join(work_dir, 'pretrain.log') if quiet else None)
    return run_tool(argv, log, watch)


def evaluate(prompts: Mapping[str, str], eval_root: str, set_names: Sequence[str], out_dir: str,
             quiet: bool = False, ensemble: bool = True, log: Optional[str] = None,
             watch: Optional[Callable[[str], None]] = None,
             model_name: Optional[str] = None) -> Dict[str, Dict[str, float]]:
    """``tools/eval_classification.py`` on the world CLIP and the rendered sets.

    Args:
        prompts: ``{method: prompt file}``; the hand prompt (and the template ensemble unless
            ``ensemble`` is False) are evaluated beside them.

    Returns:
        ``{method: {set: top-1 %}}`` (per-class accuracies: :func:`per_class`).
    """
    from .world_clip import MODEL_NAME, asset_path, world_clip_weights
    model_name = model_name or MODEL_NAME
    weights = world_clip_weights(asset_path(model_name, '.pt'),
                                 asset_path(model_name, '.card.json'))
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, 'eval.json')
    argv = ['eval_classification.py', '--datasets', 'none', '--clip-model', model_name,
            '--pretrained', weights, '--out-dir', out_dir, '--json', json_path,
            '--workers', '0', '--batch-size', '256']
    if not ensemble:
        argv.append('--no-ensemble')
    if prompts:
        argv += ['--prompts'] + list(prompts.values())
    for name in set_names:
        argv += ['--folder', f'{name}={os.path.join(eval_root, name)}']
    run_tool(argv, log or (os.path.join(out_dir, 'eval.log') if quiet else None), watch)
    return _relabel(_read_json(json_path)['results'], prompts)


def per_class(prompts: Mapping[str, str], out_dir: str) -> Dict[str, Dict[str, List[float]]]:
    """``{method: {set: per-class top-1 %}}`` of the :func:`evaluate` run in ``out_dir``."""
    return _relabel(_read_json(os.path.join(out_dir, 'eval.json'))['per_class'], prompts)


def _relabel(raw: Mapping[str, Any], prompts: Mapping[str, str]) -> Dict[str, Any]:
    # the eval tool names a prompt's row by its file name, or by its path where names clash
    bases = [os.path.basename(p) for p in prompts.values()]
    labels = dict(METHODS)
    for method, path in prompts.items():
        base = os.path.basename(path)
        labels[base if bases.count(base) == 1 else path] = method
    return {labels.get(m, m): v for m, v in raw.items()}


def _read_json(path: str) -> Any:
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def summarise(results: Mapping[str, Mapping[str, float]],
              version: str = 'v3') -> Dict[str, Dict[str, float]]:
    """Add the cross-dataset (``mean``, as the paper's) and cross-domain (``domain_mean``)
    means to each method's row, and a ``chance`` row."""
    from .protocol import CROSS_DOMAIN_SETS, cross_dataset_sets, eval_sets
    rows = dict(results)
    any_row = next(iter(results.values()))
    rows['chance'] = {s: eval_sets(version)[s].chance for s in any_row}
    out = {}
    for method, accs in rows.items():
        row = dict(accs)
        for key, group in (('mean', cross_dataset_sets(version)),
                           ('domain_mean', CROSS_DOMAIN_SETS)):
            have = [row[s] for s in group if s in row]
            if have:
                row[key] = sum(have) / len(have)
        out[method] = row
    return out


def intervals_report(per_class_acc, summary: Mapping[str, Mapping[str, float]], version: str,
                     png: str, title: str) -> Dict[str, Any]:
    """Paired intervals of the method differences and accuracy intervals (``json``), their
    markdown table (``table``), and the plot written to ``png``."""
    from . import report
    pairs = report.pair_intervals(per_class_acc, version=version)
    acc = report.accuracy_intervals(per_class_acc)
    report.plot_accuracies(acc, png, title, summary.get('chance', {}))
    groups = [g for g in ('mean', 'domain_mean', 'source', 'shapes')
              if any(g in v for v in pairs.values())]
    return {'json': {'differences': pairs, 'accuracy_intervals': acc},
            'table': report.format_intervals(pairs, groups)}


def format_results(summary: Mapping[str, Mapping[str, float]], title: str = '') -> str:
    """A :func:`summarise` table as markdown: a row per method, a column per set, then means."""
    from .report import markdown_table
    first = next(iter(summary.values()))
    means = [k for k in ('mean', 'domain_mean') if k in first]
    cols = [k for k in first if k not in ('mean', 'domain_mean')] + means
    rows = [[method] + [f'{row[c]:.1f}' if c in row else '-' for c in cols]
            for method, row in summary.items()]
    return '\n'.join(([title, ''] if title else []) + markdown_table(['method'] + cols, rows))


def iter_time(work_dir: str, warmup: int = 20) -> Optional[float]:
    """Median seconds per training iteration in the mmengine scalar logs under ``work_dir``,
    past the first ``warmup`` iterations."""
    times = []
    for path in glob.glob(os.path.join(work_dir, '*', 'vis_data', 'scalars.json')):
        with open(path, encoding='utf-8') as f:
            for line in f:
                rec = json.loads(line)
                if 'time' in rec and rec.get('step', 0) > warmup:
                    times.append(rec['time'])
    return statistics.median(times) if times else None


def load_state(path: str, default: Mapping[str, Any]) -> Dict[str, Any]:
    """The resumable record of an experiment at ``path``, or a copy of ``default``."""
    if os.path.isfile(path):
        try:
            return _read_json(path)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path} is not a JSON record of runs ({err}): move it away to '
                             'start over') from None
    return json.loads(json.dumps(default))


def save_state(path: str, state: Mapping[str, Any]) -> str:
    """Write the record atomically: an interrupted run never leaves half a file."""
    return atomic_write_json(path, state)


_EPOCH_LINE = re.compile(r'Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\]')
_MAX_EPOCHS = re.compile(r'max_epochs\s*=\s*(\d+)')


def training_progress(bar) -> Callable[[str], None]:
    """A :func:`run_tool` watcher that moves ``bar`` (tqdm) along an mmengine epoch-based
    training log: the total is epochs x iterations per epoch, once the log shows both."""
    state = {'epochs': None}

    def watch(line: str) -> None:
        if state['epochs'] is None:
            found = _MAX_EPOCHS.search(line)
            if found:
                state['epochs'] = int(found.group(1))
            return
        found = _EPOCH_LINE.search(line)
        if found:
            epoch, it, per_epoch = (int(g) for g in found.groups())
            bar.total = state['epochs'] * per_epoch
            bar.n = (epoch - 1) * per_epoch + it
            bar.refresh()
    return watch


class Stages:
    """The console of a long experiment: one progress bar per stage, the tools' output in log
    files, and each stage's time at the end.

    Args:
        log_dir: Folder of the tools' logs (created).
        verbose: Tools print to the console instead, and no bars are drawn.
        stream: Where the bars and lines go.
    """

    def __init__(self, log_dir: str, verbose: bool = False, stream: Optional[TextIO] = None):
        self.log_dir, self.verbose = log_dir, verbose
        self.stream = stream or sys.stderr
        self.times: Dict[str, float] = {}
        os.makedirs(log_dir, exist_ok=True)

    def log(self, name: str) -> Optional[str]:
        """The log file of a tool run named ``name``, or None (console) when verbose."""
        return None if self.verbose else os.path.join(self.log_dir, f'{name}.log')

    @contextlib.contextmanager
    def stage(self, name: str, total: Optional[int] = None, unit: str = 'step') -> Iterator:
        """Time a stage and yield its tqdm bar; a :class:`ToolError` inside ends the program
        with the stage's name, the log and its last lines."""
        from tqdm import tqdm
        start = time.perf_counter()
        bar = tqdm(total=total, desc=f'{name:<18}', unit=unit, file=self.stream, ncols=90,
                   disable=self.verbose, leave=True, mininterval=1.0)
        try:
            yield bar
        except ToolError as err:
            bar.close()
            raise SystemExit(f'stage "{name}" failed: {err}') from None
        if bar.total is not None:
            bar.n = bar.total
        bar.close()
        self.times[name] = time.perf_counter() - start

    def summary(self) -> List[str]:
        """One line per finished stage with its time, and the total."""
        width = max((len(n) for n in self.times), default=5)
        lines = [f'  {n:<{width}}  {t:6.0f} s' for n, t in self.times.items()]
        return lines + [f'  {"total":<{width}}  {sum(self.times.values()):6.0f} s']
