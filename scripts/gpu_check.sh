#!/usr/bin/env bash
# The GPU check: the CUDA tests and the benchmarks on the GPU, results under $OUT (default
# ./gpu_check). Prepared and smoke-tested on a CPU-only machine (each step skips or reports when
# there is no CUDA device); run it on a GPU machine as one command:
#
#     bash scripts/gpu_check.sh            # ~5-8 min on one GPU
#
# Steps: (1) setup and the CUDA tests (pytest -m cuda), (2) benchmarks with --device cuda
# (batched DI settles, compiled chunks, training cost, predictive-coding cost), (3) a sweep
# sharded over every visible GPU on a local Dask cluster (one worker per GPU), checked against
# the same sweep in one process. Each step writes its log and JSON under $OUT; a failing step
# is recorded in $OUT/status.txt and the next one still runs.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
status="$OUT/status.txt"
: > "$status"

step() {            # step NAME COMMAND...: run, log to $OUT/NAME.log, record the exit code
  local name="$1"; shift
  echo "== $name: $*"
  local start=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - start))s" | tee -a "$status"
  tail -n 5 "$OUT/$name.log"
}

bash scripts/setup.sh > "$OUT/setup.log" 2>&1 || echo "setup rc=$?" >> "$status"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.device_count(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/device.txt"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

step cuda_tests "$PY" -m pytest -q -m cuda tests
step di_batched "$PY" -m benchmarks.di_batched --device cuda --out "$OUT/di_batched"
step compile_chunk "$PY" -m benchmarks.compile_chunk --device cuda --out "$OUT/compile_chunk"
step train_cost "$PY" -m benchmarks.train_cost --device cuda --repeats 1 --out "$OUT/train_cost"
step pc_cost "$PY" -m benchmarks.pc_cost --device cuda --out "$OUT/pc_cost"
step sharded_sweep "$PY" scripts/gpu_sharded_sweep.py "$OUT/sharded_sweep"
echo "results under $OUT:"; cat "$status"
