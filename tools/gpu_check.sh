#!/usr/bin/env bash
# The GPU checks of the pre-training issue, as one prepared run for a lent GPU machine
# (the "device" tool; nothing can be fetched there, its python3 has torch, timm and pytest).
#
#   bash tools/gpu_check.sh --fetch      # here: download the pure-Python wheels it lacks to .whl/
#   device run: command 'bash tools/gpu_check.sh', carry ['.whl'], timeout_s 540
#
# On the GPU: the CUDA tests (tests/test_gpu.py), the full-scale step benchmark (random
# ViT-B/16, bf16, 32 images x 4 views, K=1,000 of N=21,841: views/s and peak memory) and the
# K / N tables on the GPU, packed and padded; logs and tables go to $OUT (default
# /tmp/gpu_check). About 7 min on an H100 (estimate), most of it building ViT-B/16 and tokenizing
# names once per benchmark process.
set -euo pipefail
cd "$(dirname "$0")/.."
# the versions the CPU suite runs with (tools/constraints.txt pins the rest of that set-up)
WHEELS=(open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 mmengine==0.10.7 addict==2.4.0
        yapf==0.43.0 platformdirs==4.14.8 termcolor==3.3.0 timm==1.0.31)

if [[ "${1:-}" == --fetch ]]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  rm -rf .whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation py --implementation cp --platform any -d .whl "${WHEELS[@]}"
  ls -l .whl
  exit 0
fi

OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
[[ -d .whl ]] || { echo 'no .whl/: run "bash tools/gpu_check.sh --fetch" here first' >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__)' | tee -a "$OUT/gpu.txt"
status=0
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/test_gpu.log" \
  || status=1
python3 tools/benchmarks/pretrain.py --full-scale > "$OUT/full_scale.md" 2> "$OUT/full_scale.log" \
  || status=1
cat "$OUT/full_scale.md"
python3 tools/benchmarks/pretrain.py --device cuda --steps 10 --warmup 3 \
  > "$OUT/k_and_n.md" 2> "$OUT/k_and_n.log" || status=1
cat "$OUT/k_and_n.md"
# packed (one attention call per prompt length) vs padded own tokens: which is faster on a GPU
python3 tools/benchmarks/pretrain.py --device cuda --steps 10 --warmup 3 --ks 128 --no-pack \
  > "$OUT/k_and_n_padded.md" 2> "$OUT/k_and_n_padded.log" || status=1
cat "$OUT/k_and_n_padded.md"
exit $status
