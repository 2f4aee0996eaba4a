#!/usr/bin/env bash
# The searches of the ground-truth benchmark (bench_search_guidance.py --search-only) on a CUDA machine: the
# proxy trains on the GPU, every (method, seed) unit in its own process at once. The studies come back as
# $OUT/studies.tgz; unpack it in the repo root here and run the same benchmark command without --search-only,
# --jobs and --proxy-device's machine: the searches are complete, so it only judges them (ground truth and
# latency on this CPU).
#
#   OUT=/tmp/o METHODS=latency-guided,macs-guided,random SEEDS=0,1,2 bash benchmarks/search_on_gpu.sh
#
# Needs the table the searches predict from at $TABLE (default runs/bench_transfer/full.json) and, on a bare
# CUDA image, optuna and its needs as wheels in .whl/ (see benchmarks/gpu_check.sh).
set -u
OUT=${OUT:-gpu_search_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi -L
t0=$(date +%s)
timeout -k 10 "${LIMIT:-400}" $PY benchmarks/bench_search_guidance.py --table "${TABLE:-runs/bench_transfer/full.json}" \
    --methods "${METHODS:-latency-guided,macs-guided,random}" --seeds "${SEEDS:-0,1,2}" --trials "${TRIALS:-60}" \
    --proxy-device cuda --search-only --jobs "${JOBS:-12}" > "$OUT/log" 2>&1
echo "searches: rc=$? wall=$(( $(date +%s) - t0 )) s"
tail -n 3 runs/bench_search_guidance/units/*.log
tar czf "$OUT/studies.tgz" runs/bench_search_guidance
ls -la "$OUT"
