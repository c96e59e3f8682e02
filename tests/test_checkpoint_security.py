"""Crafted checkpoints against the allow-list `import pomp_mm` adds to torch's weights-only
unpickler (found in review; each payload did harm before its fix). The payloads only ever
touch a marker file in tmp_path."""
import collections
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch

import pomp_mm  # noqa: F401  registers the allow-list under test

NP = 'numpy._core.multiarray' if hasattr(np, '_core') else 'numpy.core.multiarray'


class _Pickle:
    """A protocol-2 pickle written opcode by opcode."""

    def __init__(self):
        self.b = bytearray(b'\x80\x02')

    def op(self, code: bytes) -> '_Pickle':
        self.b += code
        return self

    def glob(self, mod, name):
        return self.op(b'c' + mod.encode() + b'\n' + name.encode() + b'\n')

    def text(self, x):
        e = x.encode()
        return self.op(b'X' + struct.pack('<I', len(e)) + e)

    def int(self, n):
        return self.op(b'J' + struct.pack('<i', n))

    def put(self, k):
        return self.op(b'r' + struct.pack('<I', k))

    def get(self, k):
        return self.op(b'j' + struct.pack('<I', k))

    def raw(self, data: str):  # bytes via _codecs.encode(data, 'latin1'), as torch allows
        return self.glob('_codecs', 'encode').text(data).text('latin1').op(b'\x86R')

    def dtype(self, code):
        return self.glob('numpy', 'dtype').text(code).op(b'\x85R')

    def save(self, path) -> str:
        torch.save({'a': 1}, path)
        with zipfile.ZipFile(path) as z:
            items = [(i.filename, z.read(i.filename)) for i in z.infolist()]
        with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
            for name, data in items:
                z.writestr(name, bytes(self.b + b'.') if name.endswith('/data.pkl') else data)
        return str(path)


def test_object_array_over_file_bytes_is_refused(tmp_path):
    """ndarray((1,), dtype('O'), buffer) made every element a pointer the file chose
    (touching it crashed the process)."""
    p = _Pickle().glob('numpy', 'ndarray').op(b'(').int(1).op(b'\x85').dtype('O')
    p.glob('builtins', 'bytearray').raw('A' * 8).op(b'\x85R').op(b't\x81')
    with pytest.raises(pickle.UnpicklingError, match='construct numpy.ndarray'):
        torch.load(p.save(tmp_path / 'obj.pth'), weights_only=True)


def _array(p, memo, n, fill):
    """A = _reconstruct(ndarray, (0,), b'b') with the state of n big-endian uint32."""
    p.glob(NP, '_reconstruct').glob('numpy', 'ndarray').int(0).op(b'\x85').raw('b')
    p.op(b'\x87R').put(memo)
    p.op(b'(').int(1).int(n).op(b'\x85').dtype('>u4').op(b'\x89').raw(fill * 4 * n)
    return p.op(b'tb')


def test_an_array_takes_one_state(tmp_path):
    """A second state freed the buffer under a view or tensor made from the first."""
    p = _array(_Pickle().op(b']'), 1, 16, 'A').op(b'a')
    p.get(1).op(b'(').int(1).int(1).op(b'\x85').dtype('u1').op(b'\x89').raw('\x00').op(b'tb')
    with pytest.raises(pickle.UnpicklingError, match='takes one state'):
        torch.load(p.save(tmp_path / 'twice.pth'), weights_only=True)
    ok = _array(_Pickle(), 1, 4, 'A').save(tmp_path / 'once.pth')
    arr = torch.load(ok, weights_only=True)
    assert isinstance(arr, np.ndarray) and arr.tolist() == [0x41414141] * 4


def test_statistics_methods_are_no_gadget(tmp_path):
    """getattr(HistoryBuffer, 'current') used to hand the file a function returning any object
    it built: with _rebuild_from_type_v2 that set attributes on classes (here Counter)."""
    hb = ('mmengine.logging.history_buffer', 'HistoryBuffer')
    p = _Pickle().op(b']')
    p.glob('builtins', 'getattr').glob(*hb).text('current').op(b'\x86R').put(0).op(b'a')

    def counter_with(key, push):
        p.glob('collections', 'Counter').op(b')R}').text(key)
        push()
        return p.op(b'sb')

    counter_with('_log_history', lambda: p.op(b']').glob('collections', 'Counter').op(b'a'))
    p.put(1).op(b'a')
    counter_with('as_subclass', lambda: p.get(0)).put(2).op(b'a')
    counter_with('_log_history', lambda: p.op(b']').get(2).op(b'a')).put(3).op(b'a')
    p.glob('torch._tensor', '_rebuild_from_type_v2').op(b'(').get(0).get(1).get(3).op(b'\x85')
    p.op(b'}').text('pwned').text('yes').op(b's').op(b'tR').op(b'a')
    with pytest.raises(Exception):
        torch.load(p.save(tmp_path / 'gadget.pth'), weights_only=True)
    assert not hasattr(collections.Counter, 'pwned')


def test_a_dtype_rewritten_after_its_array_is_not_the_arrays(tmp_path):
    """A file-made dtype object takes a later state that adds an object field; the array built
    with it earlier must not see it (its bytes would become object pointers)."""
    p = _Pickle().glob('numpy', 'dtype').text('f8').op(b'\x89\x88\x87R').put(2).op(b'\x85')
    p.glob(NP, '_reconstruct').glob('numpy', 'ndarray').int(0).op(b'\x85').raw('b')
    p.op(b'\x87R').op(b'(').int(1).int(1).op(b'\x85').get(2).op(b'\x89').raw('A' * 8).op(b'tb')
    p.get(2).op(b'(').int(3).text('|').op(b'N').text('a').op(b'\x85')
    p.op(b'}').text('a').dtype('O').int(0).op(b'\x86s').int(8).int(8).int(63).op(b'tb')
    p.op(b'\x87')
    try:
        _, arr, dtype = torch.load(p.save(tmp_path / 'dtype.pth'), weights_only=True)
    except pickle.UnpicklingError:
        return  # refusing the file is as good
    assert arr.dtype is not dtype and not arr.dtype.hasobject
    assert arr.dtype == np.float64 and arr.tobytes() == b'A' * 8
    with pytest.raises(pickle.UnpicklingError, match='plain numbers'):  # and no fields at all
        q = _Pickle().glob(NP, '_reconstruct').glob('numpy', 'ndarray').int(0).op(b'\x85')
        q.raw('b').op(b'\x87R').op(b'(').int(1).int(1).op(b'\x85')
        q.glob('numpy', 'dtype').op(b']').text('x').text('<f8').op(b'\x86a\x85R')
        q.op(b'\x89').raw('A' * 8).op(b'tb')
        torch.load(q.save(tmp_path / 'fields.pth'), weights_only=True)


#: Everything pomp_mm adds to torch's weights-only allow-list, by the name a pickle uses.
#: Adding an entry is a security decision: it needs a review, then a change here.
ALLOWED = {
    'numpy._core.multiarray.scalar', 'numpy.core.multiarray.scalar', 'numpy.dtype',
    'numpy.dtypes.BoolDType', 'numpy.dtypes.Float16DType', 'numpy.dtypes.Float32DType',
    'numpy.dtypes.Float64DType', 'numpy.dtypes.Int32DType', 'numpy.dtypes.Int64DType',
    'numpy.ndarray', 'pomp_mm.compat._SafeArray',
    'mmengine.logging.history_buffer.HistoryBuffer', 'builtins.getattr',
    'numpy._core.multiarray._reconstruct', 'numpy.core.multiarray._reconstruct',
}


def test_allow_list_is_exactly_the_reviewed_one():
    import builtins

    import numpy as np
    import torch

    from pomp_mm import compat
    entries = compat.mmengine_safe_globals()
    names = [name for _, name in entries]
    assert len(names) == len(set(names)) and set(names) <= ALLOWED
    assert {'builtins.getattr', 'numpy.ndarray', 'mmengine.logging.history_buffer.HistoryBuffer',
            'numpy.dtype'} <= set(names)
    by_name = dict((name, obj) for obj, name in entries)
    # the dangerous names are stand-ins, never the real objects
    assert by_name['builtins.getattr'] is not builtins.getattr
    assert by_name['numpy.ndarray'] is not np.ndarray
    for name in names:
        if name.endswith('_reconstruct'):
            assert by_name[name] is compat._safe_reconstruct
    registered = {name for item in torch.serialization.get_safe_globals()
                  if isinstance(item, tuple) for name in item[1:]}
    assert 'builtins.eval' not in registered and 'builtins.exec' not in registered
    assert registered >= set(names)
    plain = {item for item in torch.serialization.get_safe_globals()
             if not isinstance(item, tuple)}
    assert not plain & {builtins.eval, builtins.exec, builtins.getattr, builtins.setattr}
