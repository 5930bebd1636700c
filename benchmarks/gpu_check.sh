#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one call on a bare GPU machine (no network, no
# ../shared, only the working tree and .gpu_data/ travel). From the repository root:
#
#   OUT=/path/to/results bash benchmarks/gpu_check.sh
#
# Needs .gpu_data/gpu_data.tar.gz (python benchmarks/pack_gpu_data.py, run beforehand where
# the CIFAR-10 copy is). Runs, each step under its own time limit and the whole under
# GPU_CHECK_BUDGET_S (default 450 s, inside an 8-minute call):
#   1. preflight   torch / CUDA / GPU facts; stops here, cleanly, without CUDA
#   2. pytest      pytest -m gpu tests/test_gpu.py (JUnit XML)
#   3. throughput  benchmarks/distill_throughput.py: compressor vs the reference loop, with and
#                  without --compile, on the packed CIFAR-10 subset
#   4. ddp         a 2-rank DDP distillation on the one GPU (torchrun, gloo: the GPU is shared)
#   5. precision   the distillation loss in bf16 vs fp32 (forward, then a short training)
# and writes OUT/summary.json (plus one log and one JSON per step). Everything it writes is
# under $OUT; the unpacked data and compiler caches under $OUT/work are deleted at the end.
# Exit status: 0 every step passed, 2 no CUDA, 1 otherwise.
#
# GPU_CHECK_REHEARSE=1 runs every step on the CPU with tiny sizes (minutes on 2 cores), to test
# the plumbing where there is no GPU; its summary says "rehearsal", never "passed".
set -euo pipefail

: "${OUT:?set OUT to the folder for the results}"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}
PACK=${GPU_CHECK_PACK:-.gpu_data/gpu_data.tar.gz}
REHEARSE=${GPU_CHECK_REHEARSE:-0}
if ((REHEARSE)); then
    DEVICE=cpu TRAIN=512 EPOCHS=1 SUBSET=1000 TEST=200 SCALE=4
    BUDGET_S=${GPU_CHECK_BUDGET_S:-1800}
else
    DEVICE=cuda TRAIN=8000 EPOCHS=2 SUBSET=19500 TEST=1000 SCALE=1
fi
START=$(date +%s)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK="$OUT/work"
rm -rf "$WORK" "$OUT/steps.tsv"
mkdir -p "$WORK"

export PYTHONPATH=.
export PYTHONDONTWRITEBYTECODE=1
export COMPRESSOR_CACHE_DIR="$WORK/cache"
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"
export TRITON_CACHE_DIR="$WORK/triton"
export XDG_CACHE_HOME="$WORK/xdg"
export TMPDIR="$WORK/tmp"
mkdir -p "$TMPDIR"

finish() {
    local rc=$?
    trap - EXIT
    "$PY" benchmarks/gpu_check.py summary --out "$OUT" --rehearsal "$REHEARSE" \
        --total-seconds "$(($(date +%s) - START))" || true
    rm -rf "$WORK"
    exit "$rc"
}
trap finish EXIT

FAILED=0
# step NAME LIMIT_S COMMAND...: run with a time limit (never past the budget), log to
# OUT/NAME.log, record "name rc seconds limit" in OUT/steps.tsv; a failure does not stop the
# other steps.
step() {
    local name=$1 limit=$(($2 * SCALE))
    shift 2
    local left=$((BUDGET_S - ($(date +%s) - START)))
    if ((left < limit)); then limit=$left; fi
    if ((limit < 20)); then
        echo "gpu_check: $name skipped, budget spent" | tee "$OUT/$name.log"
        printf '%s\t%s\t%s\t%s\n' "$name" 125 0 0 >>"$OUT/steps.tsv"
        FAILED=1
        return 0
    fi
    echo "gpu_check: $name (limit ${limit} s)"
    local began rc=0
    began=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - began))" "$limit" >>"$OUT/steps.tsv"
    if ((rc != 0)); then
        FAILED=1
        echo "gpu_check: $name failed (exit $rc); last lines of $name.log:"
        tail -n 15 "$OUT/$name.log" || true
    fi
    return 0
}

# 1. preflight: without CUDA, stop now (exit 2) with one clear line; the summary says no_cuda.
if ! "$PY" benchmarks/gpu_check.py preflight --out "$OUT" >"$OUT/preflight.log" 2>&1; then
    if ((!REHEARSE)); then
        tail -n 1 "$OUT/preflight.log" >&2
        exit 2
    fi
    echo "gpu_check: rehearsal on the CPU (no CUDA)"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/gpu.txt" 2>&1 || true

if [[ ! -f "$PACK" ]]; then
    echo "gpu_check: $PACK is missing: run python benchmarks/pack_gpu_data.py and carry .gpu_data" >&2
    exit 1
fi
"$PY" -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$PACK" "$WORK/data"
DATA="$WORK/data/cifar10"
if ((REHEARSE)) || ! "$PY" -c "import pytest" 2>/dev/null; then
    export PYTHONPATH=".:$WORK/data/site"  # pytest from the pack (pure Python)
fi
"$PY" -c "import pytest; print('pytest', pytest.__version__, 'from', pytest.__file__)" \
    >"$OUT/pytest-origin.txt" 2>&1 || true

# 2. the CUDA tests (the digits fixtures come from the pack: no scikit-learn needed)
step pytest 120 env COMPRESSOR_TEST_DIGITS="$WORK/data/digits" \
    "$PY" -m pytest -m gpu -q -p no:cacheprovider --basetemp="$WORK/pytest" \
    --junitxml="$OUT/pytest-gpu.xml" tests/test_gpu.py

# 3. throughput, before the checks below: it is the measurement the budget must not cut. All
#    19,500 packed training images (500 more are kept for validation); the first epoch of each
#    loop pays its start-up (and --compile its compiling) and is not counted.
step throughput 240 "$PY" benchmarks/distill_throughput.py --preset gpu --data "$DATA" \
    --device "$DEVICE" --subset "$SUBSET" --test "$TEST" --epochs 3 --repeats 1 \
    --with-compile --skip tta --no-data-cache --json "$OUT/throughput.json"

# 4. two ranks on the one GPU
step ddp 100 "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 \
    benchmarks/gpu_check.py ddp --data "$DATA" --out "$OUT" --device "$DEVICE" \
    --train "$TRAIN" --epochs "$EPOCHS"

# 5. bf16 vs fp32
step precision 90 "$PY" benchmarks/gpu_check.py precision --data "$DATA" --out "$OUT" \
    --device "$DEVICE" --train "$TRAIN" --epochs $((EPOCHS + 1))

if ((FAILED)); then exit 1; fi
