#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one device call on a bare GPU machine (no network, no
# ../shared; only the working tree and the carried .gpu_data travel). From the repository root:
#
#   OUT=$OUT bash benchmarks/gpu_check.sh          # device call: carry [".gpu_data"], 600 s
#
# Needs .gpu_data/gpu_data.tar.gz (python benchmarks/pack_gpu_data.py, run beforehand where the
# CIFAR-10 copy is). Leaves exactly three files in $OUT (the device tool brings back at most 8):
#   summary.json     one line per check (passed / failed / skipped: ...), its numbers, the
#                    versions and the GPU name; rewritten after every step, so a call cut short
#                    still brings back what finished ("complete": false)
#   results.tar.gz   every step's log and JSON, the pytest JUnit XML (also rewritten per step)
#   gpu_check.log    this script's own output
# Steps, each under its own time limit and all under GPU_CHECK_BUDGET_S (default 480 s, so a
# 600-s call keeps a 2-minute margin; pack unpacking and wheel install included):
#   pack, wheels, preflight, pytest_gpu, precision, compiled_vs_eager, deterministic,
#   teacher_cast, ddp, throughput   (docs/throughput.md, "GPU check", says what each does)
# Without CUDA nothing stops early: the setup steps run as on the GPU, and every GPU-only check
# runs its code on the CPU at tiny sizes (a plumbing test) and is recorded as
# "skipped: no CUDA" with that result beside it. Unpacked data, the installed wheels and the
# compiler caches live in a temporary folder outside $OUT, deleted at the end.
# Exit status: 0 when every check that ran passed (skips for want of CUDA allowed), 1 otherwise.
set -uo pipefail

: "${OUT:?set OUT to the folder for the results}"
if [[ -z "${GPU_CHECK_LOGGING:-}" ]]; then  # run again with our own output copied to the log
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd) && export OUT  # absolute: the run below works from the repo root
    rm -f "$OUT/summary.json" "$OUT/results.tar.gz" "$OUT/gpu_check.log"
    # tee ignores INT/TERM: on a stop signal it still logs the script's last words
    GPU_CHECK_LOGGING=1 bash "$0" "$@" 2>&1 | (trap '' INT TERM && exec tee "$OUT/gpu_check.log")
    exit "${PIPESTATUS[0]}"
fi

cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
RESERVE_S=10  # kept back for the last summary and archive
PACK=${GPU_CHECK_PACK:-.gpu_data/gpu_data.tar.gz}
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
RES="$WORK/results"  # what goes into results.tar.gz
DATA="$WORK/data"
SITE="$WORK/site"    # the packed wheels, installed
mkdir -p "$RES" "$WORK/tmp"

export PYTHONPATH=".:$SITE"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export COMPRESSOR_CACHE_DIR="$WORK/cache"
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"
export TRITON_CACHE_DIR="$WORK/triton"
export XDG_CACHE_HOME="$WORK/xdg"
export TMPDIR="$WORK/tmp"

# publish [--final]: OUT/summary.json and OUT/results.tar.gz from what RES holds now
publish() {
    local rc=0
    "$PY" benchmarks/gpu_check.py summary --res "$RES" --out "$OUT" --budget-s "$BUDGET_S" \
        --total-seconds "$(($(date +%s) - START))" "$@" || rc=$?
    tar -czf "$OUT/results.tar.gz.partial" -C "$WORK" results &&
        mv -f "$OUT/results.tar.gz.partial" "$OUT/results.tar.gz"
    return "$rc"
}

finish() {
    local rc=0
    trap - EXIT INT TERM
    publish --final || rc=$?
    rm -rf "$WORK"
    exit "$rc"
}
trap finish EXIT
trap 'echo "gpu_check: interrupted"; touch "$RES/interrupted"; exit 1' INT TERM

# step NAME LIMIT_S COMMAND...: run with a time limit (never past the budget), output to
# RES/NAME.log, "name rc seconds limit" to RES/steps.tsv (rc 125: not started, budget spent);
# a failure does not stop the other steps.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - RESERVE_S - ($(date +%s) - START)))
    if ((left < limit)); then limit=$left; fi
    if ((limit < 15)); then
        echo "gpu_check: $name not started, budget spent"
        printf '%s\t%s\t%s\t%s\n' "$name" 125 0 0 >>"$RES/steps.tsv"
        return 0
    fi
    echo "gpu_check: $name (limit ${limit} s) at $(($(date +%s) - START)) s"
    local began rc=0
    began=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$RES/$name.log" 2>&1 || rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - began))" "$limit" >>"$RES/steps.tsv"
    if ((rc != 0)); then
        echo "gpu_check: $name exit $rc after $(($(date +%s) - began)) s; last lines of $name.log:"
        tail -n 12 "$RES/$name.log"
    fi
    publish >/dev/null 2>&1 || true
}

echo "gpu_check: budget ${BUDGET_S} s, pack $PACK, python $(command -v "$PY")"
if [[ ! -f "$PACK" ]]; then
    echo "gpu_check: $PACK is missing: run python benchmarks/pack_gpu_data.py and carry .gpu_data"
fi
step pack 60 "$PY" benchmarks/gpu_check.py unpack --pack "$PACK" --dest "$DATA" --out "$RES"
step wheels 60 "$PY" benchmarks/gpu_check.py wheels --wheels "$DATA/wheels" --dest "$SITE" \
    --out "$RES"
step preflight 60 "$PY" benchmarks/gpu_check.py preflight --out "$RES"
CUDA=$("$PY" -c 'import json, sys; print(int(bool(json.load(open(sys.argv[1]))["env"]["cuda_available"])))' \
    "$RES/preflight.json" 2>/dev/null || echo 0)

if ((CUDA)); then
    DEVICE=cuda LOW=bf16 TRAIN=8000 VAL=1000 EPOCHS=3 CVE_EPOCHS=4 DET_EPOCHS=2 DDP_EPOCHS=2
    THROUGHPUT=(--subset 10000 --test 1000 --epochs 3 --with-eager)
else
    echo "gpu_check: no CUDA: GPU-only checks run their code on the CPU at tiny sizes and are" \
        "recorded as 'skipped: no CUDA'"
    # bf16 arms in fp32 (CPUs without bf16 units emulate it, minutes even at these sizes)
    DEVICE=cpu LOW=fp32 TRAIN=128 VAL=64 EPOCHS=1 CVE_EPOCHS=2 DET_EPOCHS=1 DDP_EPOCHS=1
    THROUGHPUT=(--subset 128 --test 32 --epochs 2)
fi
COMMON=(--data "$DATA/cifar10" --teacher "$DATA/teacher/cifar_resnet20_w32.pt" --out "$RES"
    --device "$DEVICE" --low-precision "$LOW" --train "$TRAIN" --val "$VAL")

# the CUDA tests (test_gpu.py builds its digits with scikit-learn, present on the GPU machine)
step pytest_gpu 180 "$PY" -m pytest -o addopts= -m gpu -q -p no:cacheprovider --basetemp="$WORK/pytest" \
    --junitxml="$RES/pytest_gpu.xml" tests/test_gpu.py
step precision 90 "$PY" benchmarks/gpu_check.py precision "${COMMON[@]}" --epochs "$EPOCHS"
step compiled_vs_eager 120 "$PY" benchmarks/gpu_check.py compiled_vs_eager "${COMMON[@]}" \
    --epochs "$CVE_EPOCHS"
step deterministic 60 "$PY" benchmarks/gpu_check.py deterministic "${COMMON[@]}" \
    --epochs "$DET_EPOCHS"
step teacher_cast 60 "$PY" benchmarks/gpu_check.py teacher_cast "${COMMON[@]}" --epochs 1
# two ranks on the one GPU (gloo: NCCL refuses two ranks on one device)
step ddp 90 "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 \
    benchmarks/gpu_check.py ddp "${COMMON[@]}" --epochs "$DDP_EPOCHS"
# reference loop vs compressor (auto: compiled on CUDA) vs compressor --no-compile (CUDA only:
# on CPU auto is eager); the first epoch of each pays its start-up (and compiling), not counted
step throughput 150 "$PY" benchmarks/distill_throughput.py --preset gpu --data "$DATA/cifar10" \
    --device "$DEVICE" "${THROUGHPUT[@]}" --repeats 1 --skip tta --no-data-cache \
    --json "$RES/throughput.json"
