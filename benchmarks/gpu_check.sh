#!/usr/bin/env bash
# The GPU check: the CUDA tests, the backend contract tests and a tiny-space table build, validation and
# predictions on a CUDA machine, each step bounded in time, everything logged to $OUT/log.
#
#   OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh      # in the repo root of a machine with an NVIDIA GPU
#
# Python packages the machine lacks (optuna and its needs on a bare CUDA image) are installed from wheels in
# .whl/ when that folder exists (no network needed). Results: benchmarks/results/gpu_check_h200.md.
set -u
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
LOG=$OUT/log
export PYTHONUNBUFFERED=1
PY=${PY:-python3}

step() {  # step NAME LIMIT_S COMMAND...: run it under `timeout`, log its output, exit status and wall time
    local name=$1 limit=$2 t0 rc
    shift 2
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    t0=$(date +%s%N)
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    echo "=== $name rc=$rc wall=$(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$LOG"
    return "$rc"
}

if [ -d .whl ]; then
    step wheels 90 bash -c "$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
step install 120 "$PY" -m pip install -q --no-deps --no-build-isolation -e . || export PYTHONPATH=$PWD:${PYTHONPATH:-}
step env 60 bash -c "nvidia-smi; $PY -c 'import torch, onnxruntime as ort, optuna; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"-\", \"cudnn\", torch.backends.cudnn.version()); print(\"onnxruntime\", ort.__version__, ort.get_available_providers()); print(\"optuna\", optuna.__version__)'"
step pytest-cuda 150 "$PY" -m pytest -n 0 -m cuda -q -p no:cacheprovider --continue-on-collection-errors -rs
step pytest-backends 150 "$PY" -m pytest -n 0 -q -p no:cacheprovider -rs tests/test_backends.py
step build 240 bash -c "$PY -m nas build-latency-table --device gpu --space search_spaces/tiny.toml --out $OUT/gpu_tiny.json --json > $OUT/build.json; rc=\$?; cat $OUT/build.json; exit \$rc"
cp "$OUT/gpu_tiny.json" /tmp/gpu_tiny_lazy.json 2>/dev/null  # the preset's blocks are added to a copy, not the table
step validate 150 bash -c "$PY -m nas validate-table $OUT/gpu_tiny.json --samples 30 --json > $OUT/validate.json; rc=\$?; $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print({k: d.get(k) for k in (\"samples\", \"mape_pct\", \"within_5_pct\", \"within_10_pct\", \"kendall_tau\", \"kendall_tau_macs\", \"max_abs_error_pct\", \"bias_pct\", \"drift_pct\", \"table_mismatch\")})' $OUT/validate.json; exit \$rc"
step sample 30 "$PY" -m nas sample --space search_spaces/tiny.toml --n 1 --seed 1 --out /tmp/gpu_cfg --json
step predict 60 bash -c "$PY -m nas predict /tmp/gpu_cfg/*.json --table $OUT/gpu_tiny.json --json | tee $OUT/predict.json"
step predict-preset 120 bash -c "$PY -m nas predict shufflenetv2-0.5x --table /tmp/gpu_tiny_lazy.json --measure-missing --json | tee $OUT/predict_preset.json"
echo "=== done" | tee -a "$LOG"
