#!/usr/bin/env bash
# Create (or refresh) the local virtual environment .venv with pomp_mm installed in editable
# mode, in one of two layers:
#   tools/install.sh core   torch, mmengine, open_clip, timm: all that the core and `make demo`
#                           need (no mmcv, mmdet, mmseg; a few minutes)
#   tools/install.sh [all]  the core, then the pinned OpenMMLab stack (mmcv built from source
#                           unless a wheel is found) and the test tools: `make test`
# Idempotent: a stamp per layer records the hash of this script, setup.cfg and the
# constraints, so a second run is a no-op (an `all` install also counts as `core`).
#
# Environment:
#   PYTHON          interpreter for the venv (default: python3.11, else python3)
#   VENV            venv folder (default: .venv)
#   PIP_FIND_LINKS  extra wheel folders; a prebuilt mmcv-2.1.0 wheel found there
#                   is used instead of the ~12 minute source build.
#   POMP_MM_INSTALL_DRY_RUN=1  print the pip commands of the layer instead of running them
# Each step prints one line; pip's own output goes to $VENV/install.log (a failing step prints
# the log's last lines and its path).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LAYER=${1:-all}
case "$LAYER" in
  core|all) ;;
  *) echo "tools/install.sh: unknown layer '$LAYER' (core or all)" >&2; exit 2 ;;
esac
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
DRY=${POMP_MM_INSTALL_DRY_RUN:-}
STAMP="$VENV/.pomp_mm-installed-$LAYER"
want=$(cat tools/install.sh setup.cfg tools/constraints.txt | sha256sum | cut -d' ' -f1)

stamped() { [[ -f "$VENV/.pomp_mm-installed-$1" && "$(cat "$VENV/.pomp_mm-installed-$1")" == "$want" ]]; }
if [[ -z "$DRY" ]] && { stamped "$LAYER" || stamped all; }; then
  exit 0
fi

log() { printf '[install] %s\n' "$*"; }
# pip's resolver chatter and setuptools' warnings (hundreds of lines) go to the log, not the
# terminal; a failure shows where it broke
quietly() {
  if ! "$@" >>"$PIP_LOG" 2>&1; then
    echo "[install] failed: ${*: -3}; the last lines of $PIP_LOG:" >&2
    tail -n 25 "$PIP_LOG" >&2
    exit 1
  fi
}
# every pip call goes through here, so a dry run lists exactly what a layer asks pip for
pip_install() {
  if [[ -n "$DRY" ]]; then echo "pip install $*"; else quietly "${PIP[@]}" "$@"; fi
}

if [[ -n "$DRY" ]]; then
  PY="$VENV/bin/python"
else
  [[ -x "$VENV/bin/python" ]] || { log "creating $VENV with $PYTHON"; "$PYTHON" -m venv "$VENV"; }
  PY="$(cd "$VENV" && pwd)/bin/python"
  PIP_LOG="$(cd "$VENV" && pwd)/install.log"
  printf '\n==== tools/install.sh %s, %s\n' "$LAYER" "$(date -u)" >>"$PIP_LOG"
  log "layer '$LAYER' into $VENV (pip's output: $PIP_LOG)"
fi
PIP=("$PY" -m pip install --disable-pip-version-check -c "$ROOT/tools/constraints.txt")

log "build tools (setuptools < 82 still ships pkg_resources, which mmcv's setup.py imports)"
pip_install -U pip wheel "setuptools>=77.0.3,<82"

log "torch 2.14.1 + torchvision 0.29.1"
pip_install torch==2.14.1 torchvision==0.29.1

if [[ "$LAYER" == core ]]; then
  log "mmengine 0.10.7, open_clip_torch, timm and pomp_mm (editable): the core layer"
  pip_install mmengine==0.10.7 opencv-python-headless numpy
  pip_install -e .
  [[ -n "$DRY" ]] && exit 0
  log "checking the pins"
  "$PY" - <<'PYEOF'
import torch, torchvision, mmengine, open_clip
want = {"torch": "2.14.1", "torchvision": "0.29.1", "mmengine": "0.10.7"}
got = {"torch": torch.__version__, "torchvision": torchvision.__version__,
       "mmengine": mmengine.__version__}
bad = {k: (got[k], v) for k, v in want.items() if not got[k].split("+")[0] == v}
if bad:
    raise SystemExit(f"version pins broken (got, wanted): {bad}")
print("ok (core):", ", ".join(f"{k} {v}" for k, v in got.items()),
      f"open_clip {open_clip.__version__}")
PYEOF
  echo "$want" > "$STAMP"
  exit 0
fi

log "mmengine 0.10.7 and mmcv build dependencies"
pip_install mmengine==0.10.7 ninja packaging addict yapf opencv-python-headless numpy

if [[ -n "$DRY" ]]; then
  echo "pip install --no-deps --force-reinstall --only-binary mmcv mmcv==2.1.0 (else: build mmcv 2.1.0 from source)"
elif "$PY" -c "import mmcv, mmcv.ops" 2>/dev/null && [[ "$("$PY" -c 'import mmcv; print(mmcv.__version__)')" == 2.1.0 ]]; then
  log "mmcv 2.1.0 with ops already installed"
# --force-reinstall: an mmcv 2.1.0 that is present but broken (no ops, another torch ABI) would
# otherwise count as "already satisfied" and never be repaired
elif "${PIP[@]}" --no-deps --force-reinstall --only-binary mmcv mmcv==2.1.0 >>"$PIP_LOG" 2>&1; then
  log "mmcv 2.1.0 installed from a prebuilt wheel (PIP_FIND_LINKS)"
else
  log "building mmcv 2.1.0 with ops from the PyPI source (about 12 minutes on 2 cores)"
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  quietly "$PY" -m pip download --no-deps --no-binary mmcv --no-build-isolation mmcv==2.1.0 \
    -d "$build"
  tar -xzf "$build"/mmcv-2.1.0.tar.gz -C "$build"
  # torch 2.14 headers need C++20; mmcv 2.1.0's setup.py hard-codes C++17.
  sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-2.1.0/setup.py"
  quietly env MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" \
    --no-build-isolation --no-deps --force-reinstall "$build/mmcv-2.1.0"
fi

log "mmdet 3.3.0, mmsegmentation 1.2.2, open_clip_torch and pomp_mm (editable)"
pip_install -e ".[test]"
[[ -n "$DRY" ]] && exit 0

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
