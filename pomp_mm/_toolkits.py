"""The OpenMMLab versions the adapters support, checked when an adapter is imported: a missing
or unsupported toolkit is one clear ImportError naming the extra to install, not a crash deep
inside a config. The ranges are setup.cfg's extras (a test keeps them equal)."""
from __future__ import annotations

import os
from importlib import metadata
from typing import Dict

#: extra -> {distribution: supported versions}
SUPPORTED: Dict[str, Dict[str, str]] = {
    'mmdet': {'mmcv': '>=2.0.0rc4,<2.2.0', 'mmdet': '>=3.0,<3.4'},
    'mmseg': {'mmcv': '>=2.0.0rc4,<2.2.0', 'mmsegmentation': '>=1.0,<1.3'},
}
#: set to 1 to import an adapter under versions outside the supported ranges
SKIP_ENV = 'POMP_MM_SKIP_VERSION_CHECK'


def require(extra: str) -> None:
    """Raise ImportError unless the toolkits of ``extra`` are installed in supported versions."""
    from packaging.specifiers import SpecifierSet  # matplotlib, thus mmengine, depends on it
    for dist, spec in SUPPORTED[extra].items():
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            raise ImportError(
                f"pomp_mm.{extra} needs {dist}{spec}, which is not installed: pip install "
                f"'pomp_mm[{extra}]' (mmcv builds from source; see docs/install.md), or "
                'make install-all') from None
        if os.environ.get(SKIP_ENV, '') in ('', '0') and \
                version not in SpecifierSet(spec, prereleases=True):
            raise ImportError(
                f'pomp_mm.{extra} supports {dist}{spec}; this environment has {dist} {version}. '
                f'Install a supported version, or set {SKIP_ENV}=1 to try this one')
