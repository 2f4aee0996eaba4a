#!/usr/bin/env bash
# The searches of the ground-truth benchmark (bench_search_guidance.py) on a CUDA machine: the proxy trains on the
# GPU, every (method, seed) unit in its own process at once. With GT=1 each unit then trains its picks' ground
# truth on the GPU too (--gt-only --gt-device cuda; Fashion-MNIST read from $NAS_GT_DATA), and ShuffleNetV2 1x's
# seeds 0-2 are trained there beside them (ground_truth.py spread --device cuda --exact-device) to compare the
# GPU's figures with this CPU's. What comes back under $OUT: studies.tgz (unpack it in the repo root here),
# ground_truth.jsonl (the repo's cache with the GPU's records appended: copy it over
# benchmarks/results/ground_truth.jsonl), the logs. Then run
# the same benchmark command here without --search-only/--gt-only, --jobs and the devices: the searches are
# complete and the ground truth cached, so it only measures latency (on this CPU) and judges.
#
#   OUT=/tmp/o METHODS=latency-evolution-multi,random-multi SEEDS=0,1,2 GT=1 bash benchmarks/search_on_gpu.sh
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
MODE=--search-only
if [ "${GT:-0}" = 1 ]; then
    MODE="--gt-only --gt-device cuda"
    timeout -k 10 "${LIMIT:-400}" $PY benchmarks/ground_truth.py spread --device cuda --exact-device --seeds 3 \
        > "$OUT/spread_1x_cuda.log" 2>&1 &
fi
# shellcheck disable=SC2086
timeout -k 10 "${LIMIT:-400}" $PY benchmarks/bench_search_guidance.py --table "${TABLE:-runs/bench_transfer/full.json}" \
    --methods "${METHODS:-latency-evolution-multi,random-multi,macs-evolution-multi}" --seeds "${SEEDS:-0,1,2}" --trials "${TRIALS:-60}" \
    --rungs "${RUNGS:-2}" --proxy-device cuda $MODE --jobs "${JOBS:-12}" > "$OUT/log" 2>&1
echo "searches: rc=$? wall=$(( $(date +%s) - t0 )) s"
pkill -f bench_search_guidance.py; pkill -f ground_truth.py; sleep 2  # units outliving the limit: stop them
wait
tail -n 2 runs/bench_search_guidance/units/*.log
cat "$OUT/spread_1x_cuda.log" 2>/dev/null
cp benchmarks/results/ground_truth.jsonl "$OUT/ground_truth.jsonl" 2>/dev/null
tar czf "$OUT/studies.tgz" runs/bench_search_guidance
ls -la "$OUT"
