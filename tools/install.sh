#!/usr/bin/env bash
# Create (or refresh) the local virtual environment .venv with the pinned
# OpenMMLab stack and pomp_mm installed in editable mode.  Idempotent: a stamp
# file records the hash of this script and setup.cfg, so a second run is a no-op.
#
# Environment:
#   PYTHON          interpreter for the venv (default: python3.11, else python3)
#   VENV            venv folder (default: .venv)
#   PIP_FIND_LINKS  extra wheel folders; a prebuilt mmcv-2.1.0 wheel found there
#                   is used instead of the ~12 minute source build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
STAMP="$VENV/.pomp_mm-installed"
want=$(cat tools/install.sh setup.cfg tools/constraints.txt | sha256sum | cut -d' ' -f1)

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi

log() { printf '\n[install] %s\n' "$*"; }

[[ -x "$VENV/bin/python" ]] || { log "creating $VENV with $PYTHON"; "$PYTHON" -m venv "$VENV"; }
PY="$(cd "$VENV" && pwd)/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -c "$ROOT/tools/constraints.txt")

log "build tools (setuptools < 82 still ships pkg_resources, which mmcv's setup.py imports)"
"${PIP[@]}" -U pip wheel "setuptools>=77.0.3,<82"

log "torch 2.14.1 + torchvision 0.29.1"
"${PIP[@]}" torch==2.14.1 torchvision==0.29.1

log "mmengine 0.10.7 and mmcv build dependencies"
"${PIP[@]}" mmengine==0.10.7 ninja packaging addict yapf opencv-python-headless numpy

if "$PY" -c "import mmcv, mmcv.ops" 2>/dev/null && [[ "$("$PY" -c 'import mmcv; print(mmcv.__version__)')" == 2.1.0 ]]; then
  log "mmcv 2.1.0 with ops already installed"
# --force-reinstall: an mmcv 2.1.0 that is present but broken (no ops, another torch ABI) would
# otherwise count as "already satisfied" and never be repaired
elif "${PIP[@]}" --no-deps --force-reinstall --only-binary mmcv mmcv==2.1.0 2>/dev/null; then
  log "mmcv 2.1.0 installed from a prebuilt wheel (PIP_FIND_LINKS)"
else
  log "building mmcv 2.1.0 with ops from the PyPI source (about 12 minutes on 2 cores)"
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  "$PY" -m pip download --no-deps --no-binary mmcv --no-build-isolation mmcv==2.1.0 -d "$build"
  tar -xzf "$build"/mmcv-2.1.0.tar.gz -C "$build"
  # torch 2.14 headers need C++20; mmcv 2.1.0's setup.py hard-codes C++17.
  sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-2.1.0/setup.py"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" --no-build-isolation --no-deps \
    --force-reinstall "$build/mmcv-2.1.0"
fi

log "mmdet 3.3.0, mmsegmentation 1.2.2, open_clip_torch and pomp_mm (editable)"
"${PIP[@]}" -e ".[test]"

log "checking the pins"
"$PY" - <<'PYEOF'
import torch, torchvision, mmcv, mmcv.ops, mmengine, mmdet, mmseg, open_clip, setuptools
want = {"torch": "2.14.1", "torchvision": "0.29.1", "mmcv": "2.1.0", "mmengine": "0.10.7",
        "mmdet": "3.3.0", "mmseg": "1.2.2"}
got = {"torch": torch.__version__, "torchvision": torchvision.__version__, "mmcv": mmcv.__version__,
       "mmengine": mmengine.__version__, "mmdet": mmdet.__version__, "mmseg": mmseg.__version__}
bad = {k: (got[k], v) for k, v in want.items() if not got[k].split("+")[0] == v}
if bad:
    raise SystemExit(f"version pins broken (got, wanted): {bad}")
print("ok:", ", ".join(f"{k} {v}" for k, v in got.items()), f"open_clip {open_clip.__version__}")
PYEOF
echo "$want" > "$STAMP"
