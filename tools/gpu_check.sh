#!/usr/bin/env bash
# The GPU checks of the pre-training issue, as one prepared run for a lent GPU machine
# (the "device" tool; nothing can be fetched there, its python3 has torch, timm and pytest).
#
#   bash tools/gpu_check.sh --fetch      # here: download the pure-Python wheels it lacks to .whl/
#   device run: command 'bash tools/gpu_check.sh', carry ['.whl'], timeout_s 540
#
# On the GPU, within about 6 min of the 8 a run may take (estimate; the last H200 run of the old
# script took 7): the CUDA tests (tests/test_gpu.py: flash's varlen kernel against the CPU path,
# no host sync inside a step, the compiled step), then pomp_mm's step against the official one
# side by side at full scale (random ViT-B/16, bf16, 32 images x 4 views, N = 21,841, n_ctx 16:
# text side, full step with the image tower, image-views/s and absolute peak memory of both) at
# K = 128 and 1,000 with attention='auto' (varlen on CUDA), again at K = 1,000 with
# compile=True, and with attention='grouped' (the old packed default) for reference. Logs and
# tables go to $OUT (default /tmp/gpu_check).
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
FULL=(--official --device cuda --precision bf16 --batch-size 32 --views 4 --official-n-ctx 16
      --steps 10 --warmup 3)
python3 tools/benchmarks/pretrain.py "${FULL[@]}" --official-ks 128,1000 \
  > "$OUT/official_varlen.md" 2> "$OUT/official_varlen.log" || status=1
cat "$OUT/official_varlen.md"
python3 tools/benchmarks/pretrain.py "${FULL[@]}" --official-ks 1000 --compile \
  > "$OUT/official_varlen_compile.md" 2> "$OUT/official_varlen_compile.log" || status=1
cat "$OUT/official_varlen_compile.md"
python3 tools/benchmarks/pretrain.py "${FULL[@]}" --official-ks 1000 --attention grouped \
  > "$OUT/official_grouped.md" 2> "$OUT/official_grouped.log" || status=1
cat "$OUT/official_grouped.md"
exit $status
