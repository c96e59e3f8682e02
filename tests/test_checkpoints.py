import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from pomp_mm import load_prompt, save_prompt
from pomp_mm.clip import clip_config
from pomp_mm.compat import load_with_placeholders

NAMES = ['cat', 'golden retriever', 'traffic light']


def _official_checkpoint(path, ctx):
    """What the official POMP / CoOp (Dassl) trainer writes: the prompt learner's state dict
    plus optimizer and scheduler state, the latter holding pickled scheduler objects."""
    ctx_param = nn.Parameter(ctx.clone())
    opt = torch.optim.SGD([ctx_param], lr=0.002, momentum=0.9)
    ctx_param.grad = torch.ones_like(ctx_param)
    opt.step()
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    sched = cosine.state_dict()
    sched['successor'] = cosine  # Dassl's warm-up scheduler keeps its successor object
    torch.save({
        'state_dict': {'ctx': ctx, 'token_prefix': torch.randn(5, 1, ctx.shape[-1]),
                       'token_suffix': torch.randn(5, 72, ctx.shape[-1])},
        'epoch': 20, 'optimizer': opt.state_dict(), 'scheduler': sched, 'val_result': None,
    }, path)


def test_our_format_round_trip(make_encoder, tmp_path):
    enc = make_encoder(n_ctx=4, class_token_position='middle')
    path = str(tmp_path / 'prompt.pth')
    save_prompt(path, enc.prompt_learner.ctx, clip_model=enc.model_id,
                class_token_position='middle', train_vocabulary='imagenet21k',
                train_vocabulary_size=21841, loss={'type': 'pomp', 'k': 1000})
    assert os.path.getsize(path) < 10_000
    assert [p for p in os.listdir(tmp_path) if p.endswith('.tmp')] == []
    ckpt = load_prompt(path)
    assert torch.equal(ckpt.ctx, enc.prompt_learner.ctx.detach())
    assert ckpt.meta['n_ctx'] == 4 and ckpt.meta['width'] == 64
    assert ckpt.meta['train_vocabulary_size'] == 21841 and ckpt.meta['loss']['k'] == 1000
    assert ckpt.class_token_position == 'middle'
    loaded = make_encoder(prompt=path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(NAMES), enc.encode_text(NAMES),
                                   atol=0, rtol=0)
    assert loaded.prompt_fingerprint() == enc.prompt_fingerprint()
    assert not loaded.prompt_learner.ctx.requires_grad  # frozen by default
    assert make_encoder(prompt=path, prompt_trainable=True).prompt_learner.ctx.requires_grad


def test_official_format_round_trip(make_encoder, tmp_path):
    torch.manual_seed(3)
    ctx = torch.randn(16, 64) * 0.02
    path = str(tmp_path / 'model.pth.tar-20')
    _official_checkpoint(path, ctx)
    with pytest.raises(pickle.UnpicklingError):  # plain safe loading refuses such files
        torch.load(path, weights_only=True)
    ckpt = load_prompt(path)
    assert torch.equal(ckpt.ctx, ctx)
    assert ckpt.meta['source_format'] == 'official' and ckpt.meta['epoch'] == 20
    enc = make_encoder(prompt=path)
    assert enc.prompt_learner.n_ctx == 16
    # the official prompt means the same as a new prompt holding the same vectors
    fresh = make_encoder(n_ctx=16)
    with torch.no_grad():
        fresh.prompt_learner.ctx.copy_(ctx)
        torch.testing.assert_close(enc.encode_text(NAMES), fresh.encode_text(NAMES),
                                   atol=0, rtol=0)


@pytest.mark.parametrize('torch_has_safe_globals', [True, False])  # False: torch < 2.5
def test_placeholders_never_run_pickled_code(tmp_path, monkeypatch, torch_has_safe_globals):
    if not torch_has_safe_globals:
        monkeypatch.delattr(torch.serialization, 'safe_globals')

    class Evil:
        def __reduce__(self):
            return (os.system, ('touch ' + str(tmp_path / 'pwned'),))

    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {'ctx': torch.zeros(2, 4)}, 'x': Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_with_placeholders(path)
    assert not (tmp_path / 'pwned').exists()


def test_width_mismatch_names_both_widths(make_encoder, tmp_path):
    path = str(tmp_path / 'wide.pth')
    save_prompt(path, torch.zeros(4, 768), clip_model='ViT-L-14')
    with pytest.raises(ValueError, match=r'width 768 but the text tower .* has width 64'):
        make_encoder(prompt=path)


def test_missing_prompt_path(make_encoder, tmp_path):
    with pytest.raises(FileNotFoundError, match='no_such_prompt.pth'):
        make_encoder(prompt=str(tmp_path / 'no_such_prompt.pth'))


def test_file_without_ctx(tmp_path):
    path = str(tmp_path / 'other.pth')
    torch.save({'state_dict': {'weight': torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match=r"no prompt context vectors.*\['weight'\]"):
        load_prompt(path)


# ------------------------------------------------------------------ mmengine checkpoints
class _ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)


def _runner_checkpoint(work_dir):
    """A checkpoint written by mmengine's own Runner (message hub with numpy scalars and
    HistoryBuffer objects, optimizer and scheduler state)."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)

        def forward(self, inputs=None, data_samples=None, mode='tensor'):
            x = inputs if isinstance(inputs, torch.Tensor) else torch.stack(inputs)
            out = self.linear(x)
            return {'loss': out.pow(2).mean()} if mode == 'loss' else out

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return dict(inputs=torch.full((2,), float(i)))

    runner = Runner(
        model=Toy(), work_dir=work_dir,
        train_dataloader=dict(dataset=Data(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=4),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=dict(type='CosineAnnealingLR', by_epoch=False, T_max=4),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0))
    runner.train()
    return os.path.join(work_dir, 'iter_4.pth'), runner.model.state_dict()


def test_mmengine_checkpoint_round_trip(tmp_path):
    import pomp_mm  # noqa: F401  registers the allow-list
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import _load_checkpoint

    path, state = _runner_checkpoint(str(tmp_path))
    assert torch.__version__.startswith('2.14')
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:  # without the allow-list, mmengine cannot read its own checkpoint under torch 2.14
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        assert 'mmengine.logging.history_buffer.HistoryBuffer' in unsafe
        assert any(g.endswith('multiarray.scalar') for g in unsafe)
        with pytest.raises(pickle.UnpicklingError):
            _load_checkpoint(path, map_location='cpu')
    finally:
        torch.serialization.add_safe_globals(saved)

    raw = _load_checkpoint(path, map_location='cpu')  # mmengine's own torch.load call
    hub = raw['message_hub']
    assert isinstance(hub['runtime_info']['eta'], np.floating)
    buffers = hub['log_scalars']
    assert 'train/loss' in buffers and buffers['train/loss'].mean() >= 0

    loss = buffers['train/loss']
    assert isinstance(loss, HistoryBuffer) and isinstance(loss._log_history, np.ndarray)
    assert loss.statistics('mean') == loss.mean()  # this process's own methods
    # saved again (a resumed run's next checkpoint): plain mmengine/numpy names, no pomp_mm
    again = str(tmp_path / 'again.pth')
    torch.save(raw, again)
    names = torch.serialization.get_unsafe_globals_in_checkpoint(again)
    assert not [g for g in names if 'pomp_mm' in g], names
    reloaded = _load_checkpoint(again, map_location='cpu')['message_hub']['log_scalars']
    np.testing.assert_array_equal(reloaded['train/loss']._log_history, loss._log_history)

    model = _ToyModel()
    load_checkpoint(model, path, map_location='cpu')
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], atol=0, rtol=0)


def test_allow_list_getattr_is_narrow(tmp_path):
    import pomp_mm  # noqa: F401
    from mmengine.logging.history_buffer import HistoryBuffer

    class Attr:
        def __init__(self, name):
            self.name = name

        def __reduce__(self):
            return (getattr, (HistoryBuffer, self.name))

    ok, bad = str(tmp_path / 'ok.pth'), str(tmp_path / 'bad.pth')
    torch.save({'x': Attr('mean')}, ok)
    torch.save({'x': Attr('__init_subclass__')}, bad)
    # answered with the name: a real method handed to the file is a gadget (see below)
    assert torch.load(ok, weights_only=True)['x'] == 'mean'
    with pytest.raises(pickle.UnpicklingError, match='__init_subclass__'):
        torch.load(bad, weights_only=True)


def test_placeholder_loading_without_safe_globals(monkeypatch, tmp_path):
    """torch < 2.5 lacks torch.serialization.safe_globals: our files load, files with pickled
    objects (an official Dassl checkpoint) are refused with the way out."""
    monkeypatch.delattr(torch.serialization, 'safe_globals')
    torch.manual_seed(3)
    ctx = torch.randn(4, 64) * 0.02
    ours = save_prompt(str(tmp_path / 'ours.pth'), ctx, clip_model='tiny')
    assert torch.equal(load_prompt(ours).ctx, ctx)
    official = str(tmp_path / 'model.pth.tar-20')
    _official_checkpoint(official, ctx)
    with pytest.raises(pickle.UnpicklingError, match=r'torch >= 2.5 loads them as inert'):
        load_prompt(official)


def _history_buffer_exploit(marker: str) -> bytes:
    """A pickle (found in review) that abused mmengine's HistoryBuffer.__setstate__ to add
    '__getattribute__' to the class's method table, which the allowed getattr then trusted,
    and from there reached exec() through torch's own _rebuild_from_type_v2."""
    import struct

    def text(s):
        b = s.encode()
        return b'X' + struct.pack('<I', len(b)) + b

    def glob(mod, name):
        return b'c' + mod.encode() + b'\n' + name.encode() + b'\n'

    def get(i):
        return b'h' + bytes([i])

    def put(i):
        return b'q' + bytes([i])

    hb = glob('mmengine.logging.history_buffer', 'HistoryBuffer')
    r2, ga, typ, dct, bfm, gt, blt, bget, exe, nonet, glb = range(11)

    def call(func, new_type, args):
        return get(r2) + b'(' + func + new_type + b'(' + b''.join(args) + b't' + b'}' + b'tR'

    p = b'\x80\x02]'
    p += hb + b')\x81' + b'}' + text('statistics_methods') + b'}(' + text('__getattribute__') \
        + b'K\x00' + text('__class__') + b'K\x00' + b'us' + b'ba'
    p += glob('torch._tensor', '_rebuild_from_type_v2') + put(r2) + b'a'
    p += glob('builtins', 'getattr') + hb + text('__getattribute__') + b'\x86R' + put(ga) + b'a'
    p += glob('builtins', 'getattr') + hb + text('__class__') + b'\x86R' + put(typ) + b'a'
    p += call(get(ga), get(typ), [b'}', text('__class__')]) + put(dct) + b'a'
    fn = glob('torch._utils', '_rebuild_tensor_v2')
    p += call(get(ga), get(dct), [fn, text('__globals__')]) + put(glb) + b'a'
    p += call(get(ga), get(typ), [glob('_codecs', 'encode'), text('__class__')]) + put(bfm) + b'a'
    p += call(get(ga), get(bfm), [get(glb), text('get')]) + put(gt) + b'a'
    p += call(get(gt), get(dct), [text('__builtins__')]) + put(blt) + b'a'
    p += call(get(ga), get(bfm), [get(blt), text('get')]) + put(bget) + b'a'
    p += call(get(bget), get(bfm), [text('exec')]) + put(exe) + b'a'
    p += call(get(ga), get(typ), [b'N', text('__class__')]) + put(nonet) + b'a'
    p += call(get(exe), get(nonet), [text(f'open({marker!r}, "w").write("pwned")')])
    return p + b'a.'


def test_history_buffer_state_cannot_plant_methods(tmp_path):
    """Neither the allowed getattr nor HistoryBuffer's BUILD may take names from the file."""
    import zipfile

    import pomp_mm  # noqa: F401  registers the allow-list
    from mmengine.logging.history_buffer import HistoryBuffer
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'evil.pth')
    torch.save({'a': 1}, path)
    with zipfile.ZipFile(path) as z:
        items = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
        for name, data in items:
            z.writestr(name, _history_buffer_exploit(str(marker)) if name.endswith('/data.pkl')
                       else data)
    methods = dict(HistoryBuffer._statistics_methods)
    with pytest.raises(pickle.UnpicklingError, match="getattr.*'__getattribute__'"):
        torch.load(path, weights_only=True)
    assert not marker.exists()
    assert HistoryBuffer._statistics_methods == methods


def test_official_class_token_position_from_name_or_argument(make_encoder, tmp_path):
    """Dassl files do not record the class-token position: the official run name does, and the
    argument can say it; a pomp_mm prompt's own position cannot be overridden."""
    torch.manual_seed(3)
    ctx = torch.randn(4, 64) * 0.02
    front = str(tmp_path / 'vit_b16_nctx4_cscFalse_ctpfront_seed1.pth.tar')
    _official_checkpoint(front, ctx)
    assert load_prompt(front).class_token_position == 'front'
    plain = str(tmp_path / 'model.pth.tar-5')
    _official_checkpoint(plain, ctx)
    assert load_prompt(plain).class_token_position == 'end'
    fresh = make_encoder(n_ctx=4, class_token_position='middle')
    with torch.no_grad():
        fresh.prompt_learner.ctx.copy_(ctx)
        got = make_encoder(prompt=plain, class_token_position='middle')
        assert got.prompt_learner.class_token_position == 'middle'
        torch.testing.assert_close(got.encode_text(NAMES), fresh.encode_text(NAMES),
                                   atol=0, rtol=0)
    ours = save_prompt(str(tmp_path / 'ours.pth'), ctx, class_token_position='end')
    with pytest.raises(ValueError, match="learned with class_token_position='end', not 'front'"):
        make_encoder(prompt=ours, class_token_position='front')


def test_image_conditioned_prompt_learners_are_refused(tmp_path):
    path = str(tmp_path / 'cocoop.pth.tar')
    torch.save({'state_dict': {'ctx': torch.zeros(4, 64), 'meta_net.linear1.weight':
                               torch.zeros(32, 512)}}, path)
    with pytest.raises(ValueError, match=r"meta_net.linear1.weight.*CoCoOp / MaPLe"):
        load_prompt(path)


@pytest.mark.parametrize('prefix', ['', 'prompt_learner.', 'module.prompt_learner.'])
def test_maple_prompts_are_refused_and_prefixed_contexts_load(tmp_path, prefix):
    """A MaPLe prompt learner (deep compound prompts and their projection) is more than
    context vectors: refused under any key prefix; a plain context under a DDP / whole-model
    prefix loads."""
    ctx = torch.randn(4, 64)
    maple = str(tmp_path / 'maple.pth.tar')
    torch.save({'state_dict': {prefix + 'ctx': ctx,
                               prefix + 'compound_prompts_text.0': torch.zeros(2, 64),
                               prefix + 'proj.weight': torch.zeros(768, 64)}}, maple)
    with pytest.raises(ValueError, match=r"compound_prompts_text\.0.*CoCoOp / MaPLe"):
        load_prompt(maple)
    plain = str(tmp_path / 'coop.pth.tar')
    torch.save({'state_dict': {prefix + 'ctx': ctx, prefix + 'token_prefix':
                               torch.zeros(3, 1, 64)}}, plain)
    assert torch.equal(load_prompt(plain).ctx, ctx)


def test_class_token_position_comes_from_the_file_name_not_its_folder(tmp_path):
    folder = tmp_path / 'vit_b16_nctx4_cscFalse_ctpfront_seed1' / 'prompt_learner'
    folder.mkdir(parents=True)
    path = str(folder / 'model.pth.tar-5')
    _official_checkpoint(path, torch.randn(4, 64))
    ckpt = load_prompt(path)
    assert ckpt.class_token_position == 'end'
    assert ckpt.meta['class_token_position_from'] == 'default'


@pytest.mark.parametrize('umask', [0o022, 0o077])
def test_atomic_writes_get_the_umask_mode(tmp_path, umask):
    """Written through a private temporary file, but readable as a plain open() would make it
    (a Detic job under another user reads the exported .npy)."""
    old = os.umask(umask)
    try:
        path = save_prompt(str(tmp_path / 'p.pth'), torch.zeros(4, 64))
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_building_from_a_local_file_reads_its_weights_once(tmp_path):
    """Telling an mmseg-format file from an open_clip one maps the file instead of reading it:
    the weights are read once, by open_clip (bytes read via /proc/self/io)."""
    import open_clip

    from pomp_mm.clip import _read_mmseg_text, build_clip
    torch.manual_seed(0)
    model = open_clip.CLIP(**clip_config('tiny'))
    state = dict(model.state_dict(), padding=torch.zeros(8 * 2 ** 20))  # +32 MB of weights
    path = str(tmp_path / 'clip.pt')
    torch.save(state, path)

    def read_bytes() -> int:
        with open('/proc/self/io') as f:
            return int(next(line for line in f if line.startswith('rchar')).split()[1])

    before = read_bytes()
    assert _read_mmseg_text(path) == {}
    assert read_bytes() - before < 2 ** 20  # the index only, not the 32 MB
    del state['padding']
    torch.save(state, path)
    built = build_clip('tiny', path)
    torch.testing.assert_close(built.text_projection, model.text_projection)


def test_setting_a_second_prompt_replaces_the_first_everywhere(make_encoder, tmp_path):
    """set_prompt twice on one encoder: the class embeddings (memoised per prompt) and the
    recorded source are the second prompt's, as on an encoder built with it."""
    torch.manual_seed(5)
    first = save_prompt(str(tmp_path / 'first.pth'), torch.randn(4, 64) * 0.02)
    second = save_prompt(str(tmp_path / 'second.pth'), torch.randn(4, 64) * 0.02)
    enc = make_encoder(prompt=first, vocabulary=NAMES)
    with torch.no_grad():
        want = {p: make_encoder(prompt=p, vocabulary=NAMES).class_embeddings()
                for p in (first, second)}
        assert not torch.allclose(want[first], want[second])
        # alternate: freed prompt learners' ids get reused, which must not revive a table
        for path in (first, second, first, second, second, first):
            enc.set_prompt(load_prompt(path))
            assert enc.prompt_source == path
            torch.testing.assert_close(enc.class_embeddings(), want[path], atol=0, rtol=0)
    # two guards against a revived table: set_prompt forgets it, and a remembered table keeps
    # its learner alive (a freed learner's id could be the next learner's)
    import gc
    import weakref
    replaced = weakref.ref(enc.prompt_learner)  # the memo holds it with the table above
    enc.set_prompt(load_prompt(first))
    # No table for the new learner. This holds with or without set_prompt's clear: the
    # remembered table keeps the replaced learner alive, so the new one cannot have its id.
    assert enc._memo.get(enc.vocabulary, enc.prompt_learner, torch.device('cpu')) is None
    # The clear itself: set_prompt lets go of the replaced learner and its table.
    gc.collect()
    assert replaced() is None
    with torch.no_grad():
        enc.class_embeddings()
    learner = weakref.ref(enc.prompt_learner)
    enc.prompt_learner = None
    gc.collect()
    assert learner() is not None
