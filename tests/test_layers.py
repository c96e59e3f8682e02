"""The package's layers: the core imports none of the layers above it (the synthetic world,
the toolkit adapters, the test fixtures), and no module graph cycle exists in pomp_mm/; the
world reaches the core only through the core's registration functions and the plugin entry
point."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, 'pomp_mm')
#: subpackages / modules above the core
UPPER = ('pomp_mm.synthetic', 'pomp_mm.mmdet', 'pomp_mm.mmseg', 'pomp_mm.testing')


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _imports(path: str, name: str):
    """Every pomp_mm module ``path`` imports, at module level or inside functions."""
    tree = ast.parse(open(path, encoding='utf-8').read())
    package = name if path.endswith('__init__.py') else name.rsplit('.', 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith('pomp_mm'))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                mod = '.'.join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ''
            if not mod.startswith('pomp_mm'):
                continue
            yield mod
            for alias in node.names:  # "from . import world" names a module
                yield f'{mod}.{alias.name}'


def _graph():
    modules = {}
    for folder, _, files in os.walk(PKG):
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(folder, f)
                modules[_module_name(path)] = path
    return {name: sorted({m for m in _imports(path, name) if m in modules and m != name})
            for name, path in modules.items()}


def _is_upper(name: str) -> bool:
    return any(name == u or name.startswith(u + '.') for u in UPPER)


def test_the_core_imports_nothing_above_it():
    graph = _graph()
    assert 'pomp_mm.clip' in graph and 'pomp_mm.synthetic.world_clip' in graph  # parsed
    bad = [(a, b) for a, deps in graph.items() if not _is_upper(a) for b in deps if _is_upper(b)]
    assert not bad, bad


def test_no_import_cycle_in_the_package():
    graph = _graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 'open'
        for dep in graph[node]:
            # a module importing its own package's __init__ (a parent) is not a cycle of code
            if node.startswith(dep + '.'):
                continue
            if state.get(dep) == 'open':
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 'done'

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


#: The text path, in the order a prompt's data flows: encoder -> prompt layout -> tower
#: family -> attention kernel. A module may import or call only its own layer or later ones.
TEXT_PATH = (
    ('pomp_mm.text_encoder', 'pomp_mm.token_table'),
    ('pomp_mm.prompt_learner',),
    ('pomp_mm.towers',),
    ('pomp_mm.varlen', 'pomp_mm.shared_prefix'),
)


def _text_layer(module: str):
    for i, layer in enumerate(TEXT_PATH):
        if any(module == m or module.startswith(m + '.') for m in layer):
            return i
    return None


def test_the_text_path_imports_one_way():
    graph = _graph()
    assert 'pomp_mm.towers.siglip' in graph  # every family module is parsed
    back = [(a, b) for a, deps in graph.items() for b in deps
            if _text_layer(a) is not None and _text_layer(b) is not None
            and _text_layer(b) < _text_layer(a)]
    assert not back, back


@pytest.mark.parametrize('attention,share_prefix', [
    ('varlen', True), ('varlen', False), ('grouped', True), ('padded', False)])
def test_the_text_path_calls_one_way(make_encoder, attention, share_prefix):
    """No call on the text path goes back up the chain: traced through encode_names and
    encode_classes (the pre-training step's), for every attention mode."""
    import torch
    enc = make_encoder(n_ctx=4, attention=attention, share_prefix=share_prefix,
                       vocabulary=['cat', 'hot dog', 'sea lion pup'])
    roots = {}

    def layer(code):
        path = code.co_filename
        if path not in roots:
            name = _module_name(path) if path.startswith(PKG) and path.endswith('.py') else ''
            roots[path] = _text_layer(name)
        return roots[path]

    calls, back = [], []

    def profile(frame, event, arg):
        if event != 'call' or frame.f_back is None:
            return
        callee, caller = layer(frame.f_code), layer(frame.f_back.f_code)
        if callee is None or caller is None:
            return
        calls.append((caller, callee))
        if callee < caller:
            back.append(f'{frame.f_back.f_code.co_qualname} -> {frame.f_code.co_qualname}')

    sys.setprofile(profile)
    try:
        with torch.no_grad():
            enc.encode_names(['cat', 'hot dog', 'sea lion pup'])
        enc.encode_classes(torch.tensor([2, 0]))
    finally:
        sys.setprofile(None)
    assert {(0, 1), (1, 2), (0, 2)} <= set(calls)  # the trace saw every hop
    assert (2, 3) in calls or attention == 'padded'
    assert not back, back


#: Checks that need a new interpreter (nothing imported or registered yet), in the order
#: they run in one (fresh_python below): the tiny CLIP's leaves the world unloaded, as the
#: world's needs at its start.
FRESH = {
    'tiny clip': (
        'import sys, torch, open_clip; from pomp_mm.clip import build_clip, clip_config; '
        'cfg = clip_config("tiny"); assert cfg["text_cfg"]["width"] == 64, cfg; '
        'cfg["embed_dim"] = 0; assert clip_config("tiny")["embed_dim"] == 32; '
        'assert not [m for m in sys.modules if m.startswith("pomp_mm.synthetic")]; '
        'torch.manual_seed(0); a = build_clip("tiny").state_dict(); '
        'torch.manual_seed(0); b = build_clip(clip_config("tiny")).state_dict(); '
        'assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a); '
        'tok = open_clip.get_tokenizer("tiny"); assert tok("a cat").shape == (1, 77)'),
    'world': (
        'import sys, pomp_mm; from pomp_mm.clip import build_clip, ensure_model_config; '
        'assert not [m for m in sys.modules if m.startswith("pomp_mm.synthetic")]; '
        'v = pomp_mm.parse_vocabulary("synthetic_1k"); assert len(v) == 1000, len(v); '
        'assert "pomp_mm.synthetic" in sys.modules; '
        'import open_clip; assert "pomp-world-CNN-T" in open_clip.list_models()'),
}


@pytest.fixture(scope='module')
def fresh_python():
    """Run the :data:`FRESH` checks in one new interpreter, in turn (one start instead of
    one per check): name -> None if it passed, else its traceback."""
    import json
    script = ['import json, traceback', 'out = {}']
    for name, code in FRESH.items():
        script += ['try:', f'    exec({code!r}, {{}})', f'    out[{name!r}] = None',
                   'except BaseException:', f'    out[{name!r}] = traceback.format_exc()']
    script.append('print(json.dumps(out))')
    res = subprocess.run([sys.executable, '-c', '\n'.join(script)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_the_world_arrives_through_the_plugin_entry_point(fresh_python):
    """Importing the core loads no world module; the first world name asked for loads it."""
    assert fresh_python['world'] is None, fresh_python['world']


def test_the_tiny_clip_is_one_open_clip_name_shipped_with_the_package(fresh_python):
    """'tiny' is pomp_mm's own open_clip config: known by name without the world's plugin, the
    same model as its config dict, a copy per call, and declared as package data."""
    assert fresh_python['tiny clip'] is None, fresh_python['tiny clip']
    from pomp_mm.clip import clip_config
    with pytest.raises(ValueError, match="unknown open_clip model 'no-such-clip'"):
        clip_config('no-such-clip')
    with open(os.path.join(ROOT, 'setup.cfg'), encoding='utf-8') as f:
        assert 'pomp_mm = model_configs/*.json' in f.read()


def test_a_plugin_registers_vocabularies_and_a_broken_one_is_named(monkeypatch, caplog):
    from pomp_mm import plugins, vocabulary
    from pomp_mm.vocabulary import Vocabulary, load_vocabulary, register_vocabulary

    class EntryPoint:
        def __init__(self, name, value):
            self.name, self.value = name, value

    monkeypatch.setattr(plugins, '_LOADED', [])
    monkeypatch.setattr(vocabulary, '_BUILTINS', dict(vocabulary._BUILTINS))
    monkeypatch.setattr(plugins, 'entry_points', lambda group: [
        EntryPoint('broken', 'pomp_mm_no_such_plugin')])
    with caplog.at_level('WARNING', logger='pomp_mm.plugins'):
        with pytest.raises(KeyError, match="unknown built-in vocabulary 'fruit'"):
            load_vocabulary('fruit')
    assert "plugin 'broken' (pomp_mm_no_such_plugin) failed to import" in caplog.text
    register_vocabulary('Fruit', lambda: Vocabulary(('apple', 'pear'), ('a', 'p'), 'fruit'))
    assert load_vocabulary('fruit').names == ('apple', 'pear')
    with pytest.raises(ValueError, match="needs a name and a callable, got 'x', 3"):
        register_vocabulary('x', 3)


def _tool_files():
    for folder, _, files in os.walk(os.path.join(ROOT, 'tools')):
        yield from (os.path.join(folder, f) for f in files if f.endswith('.py'))


def test_tools_are_command_lines_over_the_installed_package():
    """No tool edits sys.path or imports another tool: what tools share lives in pomp_mm."""
    tools = {os.path.splitext(os.path.basename(p))[0] for p in _tool_files()}
    assert {'train', 'test', 'pretrain'} <= tools  # the user's three stay at tools/
    found = []
    for path in _tool_files():
        tree = ast.parse(open(path, encoding='utf-8').read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == 'path' and \
                    isinstance(node.value, ast.Name) and node.value.id == 'sys':
                found.append(f'{path}: sys.path')
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            found += [f'{path}: imports {n}' for n in names if n.split('.')[0] in tools
                      and n.split('.')[0] not in sys.stdlib_module_names]
    assert not found, found


def test_the_layer_check_sees_a_tool_importing_a_tool(tmp_path, monkeypatch):
    """The check above on a planted offender (it must be able to fail)."""
    bad = tmp_path / 'tools'
    bad.mkdir()
    (bad / 'train.py').write_text('')
    (bad / 'test.py').write_text('')
    (bad / 'pretrain.py').write_text('import sys\nsys.path.insert(0, ".")\nimport train\n')
    monkeypatch.setitem(globals(), 'ROOT', str(tmp_path))
    with pytest.raises(AssertionError, match='imports train'):
        test_tools_are_command_lines_over_the_installed_package()
