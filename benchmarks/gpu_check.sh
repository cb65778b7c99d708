#!/usr/bin/env bash
# The GPU check: run on a machine with a CUDA GPU, from the repository root, with the project's venv.
# It stops by itself within 8 minutes (each stage has its own time limit) and writes everything to $OUT
# (default: ./gpu-check), then prints a summary. What it measures, for benchmarks/README.md and the
# set-up page's table:
#   1. training throughput of every chapter's model through `fit`: AMP + channels-last against float32;
#   2. chapter 6's forward ranking at 5,000 x 2,048: a prefix of steps on the CUDA path against the CPU path
#      the chapter takes (same order expected), with the full ranking extrapolated from each;
#   3. the `full` rehearsal of every chapter on CUDA: that each runs, its time, and the measured memory of
#      one full-size training step (torch.cuda.max_memory_allocated) in $OUT/workload-cuda.json.
#
#     bash benchmarks/gpu_check.sh            # or: OUT=/some/folder PYTHON=python3 bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export HELPERS_PROGRESS=0 MPLBACKEND=Agg PYTHONPATH=.venv/vendor${PYTHONPATH:+:$PYTHONPATH}
started=$(date +%s)

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, never abort the script
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "   exit $rc ($(( $(date +%s) - started )) s so far); log: $OUT/$name.log"
    tail -n 25 "$OUT/$name.log"
}

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)" \
    || { echo "no CUDA GPU here: nothing to check"; exit 1; }
nproc

stage training 120 "$PYTHON" benchmarks/bench_training.py --device cuda --epochs 2 --seconds 3
stage ranking 110 "$PYTHON" benchmarks/bench_separation.py --workload-only --workload prefix --prefix 60 \
    --devices cpu cuda
stage rehearsal 210 "$PYTHON" benchmarks/rehearse.py --profiles full --device cuda --workdir "$OUT/rehearsal" \
    --json "$OUT/workload-cuda.json"

echo "== done in $(( $(date +%s) - started )) s; results in $OUT/"
