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


@pytest.mark.parametrize('adapter, dist', [('mmdet', 'mmdet'), ('mmseg', 'mmsegmentation')])
def test_importing_an_adapter_without_its_toolkit_is_one_line(adapter, dist):
    code = ('import importlib.metadata as m, sys\n'
            'real = m.version\n'
            'def version(d):\n'
            f'    if d == {dist!r}:\n'
            '        raise m.PackageNotFoundError(d)\n'
            '    return real(d)\n'
            'm.version = version\n'
            'try:\n'
            f'    import pomp_mm.{adapter}\n'
            'except ImportError as e:\n'
            '    print(e)\n'
            f'assert {adapter!r} not in sys.modules and "mmcv" not in sys.modules\n')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith(f'pomp_mm.{adapter} needs {dist}'), res.stdout
