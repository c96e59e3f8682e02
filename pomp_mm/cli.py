"""What every pomp_mm tool shares on the command line: a user's mistake is one line naming the
value and exit code 2 (as argparse does for a bad option), the traceback only with ``--debug``
or ``POMP_MM_DEBUG=1``; argument types that refuse nonsense when parsing; and the checks that
the CLIP weights, prompt files and data a run needs are on this machine before anything is
built (a new user's first try, a cluster node without internet)."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import (Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, NoReturn,
                    Optional, Tuple)

__all__ = ['DEBUG_ENV', 'DOCS', 'USER_ERRORS', 'MissingInput', 'run', 'positive_int',
           'check_clip_inputs', 'check_config_inputs', 'check_folder', 'hub_offline']

DEBUG_ENV = 'POMP_MM_DEBUG'
#: what a user's input raises (a missing file, a value out of range, an unknown name)
USER_ERRORS = (OSError, ValueError, KeyError, TypeError)
#: where the messages about missing inputs send the user
DOCS = 'docs/usage.md#offline-missing-weights-prompts-or-data'


class MissingInput(FileNotFoundError):
    """A file or folder a run needs is not on this machine, or cannot be downloaded; the
    message names the config key or option that points at a local copy."""


def run(main: Callable[[], Optional[int]]) -> NoReturn:
    """Call a tool's ``main()`` and exit with its return code; errors a user can cause end
    the process with ``<tool>: error: <message>`` and exit code 2. ``--debug`` anywhere on the
    command line (taken out before ``main`` parses it) or ``POMP_MM_DEBUG=1`` re-raises them.

    A failed download (no network, the hub unreachable) is such an error too, however deep in
    a toolkit it was raised and rewrapped: the message names the weights and where to point at
    a local copy."""
    debug = '--debug' in sys.argv[1:] or os.environ.get(DEBUG_ENV, '') not in ('', '0')
    # mmengine imports pkg_resources, whose deprecation notice (setuptools >= 67) would
    # stand above every tool's output and error, and is no news to a user
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated',
                            category=UserWarning)
    sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a != '--debug']
    try:
        code = main()
    except Exception as err:  # noqa: BLE001  anything else is re-raised below
        message = _download_failure(err)
        if message is None and isinstance(err, USER_ERRORS):
            message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        if debug or message is None:
            raise
        prog = os.path.basename(sys.argv[0])
        print(f'{prog}: error: {message} (--debug for the traceback)', file=sys.stderr)
        sys.exit(2)
    # some mains return what they wrote (a path); only an int is an exit status
    sys.exit(code if isinstance(code, int) else 0)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value} is not >= 1')
    return value


# ------------------------------------------------------------------ missing inputs
class _Problem(NamedTuple):
    what: str  # in words: 'prompt file', 'dataset folder', ...
    value: str  # the missing path, or the CLIP tag
    name: str  # a file name for the example fix
    key: str  # the config key or option that names it
    tag: Optional[str] = None  # the CLIP model, when value is an open_clip tag


#: CLIP tags that were not in the download cache when checked: a download will be tried, and if
#: it fails, :func:`run` names them and where to point at a local copy
_PENDING: List[_Problem] = []
_WEIGHT_SUFFIXES = ('.pt', '.pth', '.bin', '.safetensors', '.tar')
#: exception class names (anywhere in the MRO) that mean "no network" or "the hub is
#: unreachable": the standard library's, requests' / urllib3's and huggingface_hub's
_NETWORK_ERRORS = {'ConnectionError', 'TimeoutError', 'URLError', 'gaierror', 'Timeout',
                   'MaxRetryError', 'NewConnectionError', 'LocalEntryNotFoundError',
                   'OfflineModeIsEnabled'}


def hub_offline() -> bool:
    """Whether downloads from the Hugging Face hub are switched off (``HF_HUB_OFFLINE=1``)."""
    try:
        from huggingface_hub import constants
        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # no hub client: open_clip downloads by URL only
        return os.environ.get('HF_HUB_OFFLINE', '').upper() in ('1', 'ON', 'YES', 'TRUE')


def _tag_cached(model: str, tag: str) -> bool:
    """Whether open_clip's weights for ``model``/``tag`` are in its download cache (the hub's
    cache, or ~/.cache/clip for URL downloads), so they load without a network."""
    import open_clip
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if cfg.get('file'):
        return os.path.isfile(cfg['file'])
    hub = cfg.get('hf_hub', '')
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        hub = ''  # open_clip falls back to the URL
    if hub:
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
        repo, name = os.path.split(hub)
        names = [name] if name else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        if name.endswith(('.bin', '.pth')):
            names.insert(0, name[:-4] + '.safetensors')  # open_clip prefers these
        return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
    url = cfg.get('url', '')
    return bool(url) and os.path.isfile(
        os.path.join(os.path.expanduser('~/.cache/clip'), os.path.basename(url)))


def _clip_problem(clip_model: Any, pretrained: Any, key: str) -> Optional[_Problem]:
    """What is wrong with ``pretrained`` (an open_clip tag or a weights file) for
    ``clip_model``, or None. A tag that is not cached but may still download is remembered
    for :func:`run`."""
    if not isinstance(pretrained, str) or not pretrained:
        return None
    named = isinstance(clip_model, str) and clip_model != 'tiny' \
        and not clip_model.endswith('.json')
    if not named or os.path.isfile(pretrained) or '/' in pretrained or os.sep in pretrained \
            or pretrained.endswith(_WEIGHT_SUFFIXES):
        # a file (a config dict or 'tiny' takes no tag: build_clip reads it as a path)
        if os.path.isfile(pretrained):
            return None
        return _Problem('CLIP weights file', pretrained, os.path.basename(pretrained), key)
    import open_clip
    if pretrained not in open_clip.list_pretrained_tags_by_model(clip_model) or \
            _tag_cached(clip_model, pretrained):
        return None  # an unknown tag: build_clip says so, listing the model's tags
    problem = _Problem(f"CLIP weights '{pretrained}' for {clip_model}", pretrained,
                       f'{clip_model}.pt', key, clip_model)
    if hub_offline():
        return problem
    _PENDING.append(problem)
    return None


def _walk(node: Any, path: str) -> Iterator[Tuple[str, dict]]:
    """Every dict in a config tree with its dotted key (list items by index, as
    ``--cfg-options`` takes them)."""
    if isinstance(node, dict):
        yield path, node
        items: Iterable = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    else:
        return
    for k, v in items:
        yield from _walk(v, f'{path}.{k}')


def _local(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and '://' not in value


def config_problems(cfg: Any, loaders: Iterable[str] = (),
                    weights: bool = False) -> List[_Problem]:
    """The inputs of a config that are not on this machine: CLIP weights and prompt files of
    every module with a ``clip_model`` (all of pomp_mm's), dataset folders, other weights.

    Args:
        cfg: An mmengine ``Config`` (or a dict).
        loaders: Dataloader keys (``'train_dataloader'``, ...) whose datasets' ``data_root``
            must be folders.
        weights: Also check the local weight files outside CLIP (``pretrained`` of other
            modules, ``load_from``), which training reads.
    """
    tree = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    problems: List[_Problem] = []
    for path, node in _walk(tree.get('model') or {}, 'model'):
        if 'clip_model' in node:
            problem = _clip_problem(node['clip_model'], node.get('pretrained'),
                                    f'{path}.pretrained')
            problems += [problem] if problem else []
            prompt = node.get('prompt')
            if _local(prompt) and not os.path.isfile(prompt):
                problems.append(_Problem('prompt file', prompt, os.path.basename(prompt),
                                         f'{path}.prompt'))
        elif weights and _local(node.get('pretrained')) and \
                not os.path.isfile(node['pretrained']):
            problems.append(_Problem('weights file', node['pretrained'],
                                     os.path.basename(node['pretrained']), f'{path}.pretrained'))
    load_from = tree.get('load_from')
    if weights and _local(load_from) and not os.path.isfile(load_from):
        problems.append(_Problem('checkpoint', load_from, os.path.basename(load_from),
                                 'load_from'))
    for loader in loaders:
        for path, node in _walk((tree.get(loader) or {}).get('dataset'), f'{loader}.dataset'):
            root = node.get('data_root')
            if _local(root) and not os.path.isdir(root):
                problems.append(_Problem('dataset folder', root,
                                         os.path.basename(os.path.normpath(root)),
                                         f'{path}.data_root'))
    return problems


def _and(words: List[str]) -> str:
    return words[0] if len(words) == 1 else ', '.join(words[:-1]) + ' and ' + words[-1]


def _cfg_fix(keys: List[str], name: str) -> str:
    return '--cfg-options ' + ' '.join(f'{k}=/path/{name}' for k in keys)


def _flag_fix(keys: List[str], name: str) -> str:
    return ' '.join(f'{k} /path/{name}' for k in keys)


def _describe(problems: List[_Problem], reason: Optional[str] = None) -> str:
    """One line: the first missing input with every key that names it and a fix, the others
    by name, and the docs."""
    groups: Dict[Tuple[str, str], List[_Problem]] = {}
    for p in problems:
        groups.setdefault((p.what, p.value), []).append(p)
    first = next(iter(groups.values()))
    p, keys = first[0], list(dict.fromkeys(q.key for q in first))  # a config checked twice
    if p.tag is not None:
        head = p.what + (f' could not be downloaded ({reason})' if reason else
                         ' are not on this machine and cannot be downloaded (HF_HUB_OFFLINE '
                         'is set)' if hub_offline() else ' could not be downloaded')
    else:
        head = f"{p.what} '{p.value}' not found" + (
            '' if os.path.isabs(p.value) else f' (relative to {os.getcwd()})')
    fix = _flag_fix if keys[0].startswith('--') else _cfg_fix
    line = (f'{head}; point {_and(keys)} at a local '
            f'{"folder" if p.what == "dataset folder" else "file"} ({fix(keys, p.name)})')
    others = [g[0].what if g[0].tag else f"{g[0].what} '{g[0].value}'"
              for g in list(groups.values())[1:]]
    if others:
        line += '; also missing: ' + ', '.join(others)
    return f'{line}; see {DOCS}'


def check_config_inputs(cfg: Any, loaders: Iterable[str] = (), weights: bool = False) -> None:
    """Raise :class:`MissingInput` (one line: what is missing, the config keys that name it,
    a ``--cfg-options`` fix, the docs) unless :func:`config_problems` finds nothing."""
    problems = config_problems(cfg, loaders, weights)
    if problems:
        raise MissingInput(_describe(problems))


def check_clip_inputs(clip_model: Any, pretrained: Optional[str] = None,
                      prompts: Iterable[Optional[str]] = (), pretrained_flag: str = '--pretrained',
                      prompt_flag: str = '--prompt') -> None:
    """The command-line form of :func:`check_config_inputs`: CLIP weights (a tag or a file)
    and prompt files given by options."""
    problem = _clip_problem(clip_model, pretrained, pretrained_flag)
    problems = [problem] if problem else []
    problems += [_Problem('prompt file', p, os.path.basename(p), prompt_flag)
                 for p in prompts if _local(p) and not os.path.isfile(p)]
    if problems:
        raise MissingInput(_describe(problems))


def check_folder(path: Optional[str], option: str) -> None:
    """Raise :class:`MissingInput` if the dataset folder ``path`` given by ``option``
    (``'--data-root'``) is not a folder; None passes."""
    if path is not None and not os.path.isdir(path):
        raise MissingInput(_describe([_Problem(
            'dataset folder', path, os.path.basename(os.path.normpath(path)), option)]))


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _download_failure(err: BaseException) -> Optional[str]:
    """One line for an error raised because a download failed, else None."""
    chain = list(_chain(err))
    network = [e for e in chain if not isinstance(e, BrokenPipeError)  # a closed stdout
               and any(c.__name__ in _NETWORK_ERRORS for c in type(e).__mro__)]
    if not network:
        return None
    lines = str(network[0]).strip().splitlines() or [type(network[0]).__name__]
    reason = lines[0] if len(lines[0]) <= 160 else lines[0][:157] + '...'
    # open_clip names the tag it failed on ("Failed to download weights for tag 'openai'")
    text = ' '.join(str(e) for e in chain)
    failed = [p for p in _PENDING if f"tag '{p.value}'" in text]
    if failed:
        return _describe([p for p in _PENDING if p.value == failed[0].value], reason=reason)
    return (f'a download failed ({reason}); copy the file to this machine and point the '
            f'config key or option that names it at the local copy; see {DOCS}')
