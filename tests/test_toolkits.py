"""Importing an adapter checks its toolkit first: missing or unsupported versions are one
ImportError naming the extra, before any OpenMMLab module is imported."""
import configparser
import os
import subprocess
import sys
from importlib import metadata

import pytest

from pomp_mm import _toolkits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_supported_ranges_are_setup_cfgs_extras():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, 'setup.cfg'))
    extras = cfg['options.extras_require']
    for extra, dists in _toolkits.SUPPORTED.items():
        declared = [line.strip() for line in extras[extra].splitlines() if line.strip()]
        for dist, spec in dists.items():
            assert f'{dist}{spec}' in declared, (extra, dist, declared)


def _fake_versions(monkeypatch, **versions):
    real = metadata.version

    def version(dist):
        if dist in versions:
            if versions[dist] is None:
                raise metadata.PackageNotFoundError(dist)
            return versions[dist]
        return real(dist)
    monkeypatch.setattr(metadata, 'version', version)


def test_a_missing_toolkit_names_the_extra(monkeypatch):
    _fake_versions(monkeypatch, mmsegmentation=None)
    with pytest.raises(ImportError, match=r"^pomp_mm.mmseg needs mmsegmentation>=1.0,<1.3, "
                                          r"which is not installed: pip install "
                                          r"'pomp_mm\[mmseg\]'"):
        _toolkits.require('mmseg')


@pytest.mark.parametrize('version, ok', [('3.3.0', True), ('3.0.0', True), ('3.4.0', False),
                                         ('2.28.2', False)])
def test_versions_outside_the_range_are_refused_unless_asked(monkeypatch, version, ok):
    _fake_versions(monkeypatch, mmdet=version, mmcv='2.1.0')
    monkeypatch.delenv(_toolkits.SKIP_ENV, raising=False)
    if ok:
        _toolkits.require('mmdet')
        return
    with pytest.raises(ImportError, match=f'^pomp_mm.mmdet supports mmdet>=3.0,<3.4; this '
                                          f'environment has mmdet {version}. Install a '
                                          'supported version, or set '
                                          'POMP_MM_SKIP_VERSION_CHECK=1 to try this one$'):
        _toolkits.require('mmdet')
    monkeypatch.setenv(_toolkits.SKIP_ENV, '1')
    _toolkits.require('mmdet')


def test_mmcv_prereleases_of_the_range_pass(monkeypatch):
    _fake_versions(monkeypatch, mmcv='2.0.0rc4', mmsegmentation='1.2.2')
    _toolkits.require('mmseg')


ADAPTERS = [('mmdet', 'mmdet'), ('mmseg', 'mmsegmentation')]


@pytest.fixture(scope='module')
def adapter_imports():
    """One new interpreter imports each adapter in turn, its toolkit's distribution reported
    missing (the other's present): adapter -> (the ImportError's message, whether the toolkit
    and mmcv stayed out of sys.modules)."""
    import json
    code = ('import importlib.metadata as m, json, sys\n'
            'real = m.version\n'
            'out = {}\n'
            f'for adapter, dist in {ADAPTERS!r}:\n'
            '    def version(d, dist=dist):\n'
            '        if d == dist:\n'
            '            raise m.PackageNotFoundError(d)\n'
            '        return real(d)\n'
            '    m.version = version\n'
            '    try:\n'
            '        __import__(f"pomp_mm.{adapter}")\n'
            '        message = None\n'
            '    except ImportError as e:\n'
            '        message = str(e)\n'
            '    out[adapter] = (message,\n'
            '                    adapter not in sys.modules and "mmcv" not in sys.modules)\n'
            'print(json.dumps(out))\n')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('adapter, dist', ADAPTERS)
def test_importing_an_adapter_without_its_toolkit_is_one_line(adapter, dist, adapter_imports):
    message, clean = adapter_imports[adapter]
    assert clean, (adapter, message)
    assert message is not None and message.startswith(f'pomp_mm.{adapter} needs {dist}'), \
        message
