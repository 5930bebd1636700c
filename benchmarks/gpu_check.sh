#!/usr/bin/env bash
# Everything that needs a CUDA GPU, as one script (a few minutes on one H100/H200):
# the GPU tests, then the throughput and time-to-accuracy benchmark on CIFAR-10.
#   bash benchmarks/gpu_check.sh [path/to/cifar10] [output folder]
set -uo pipefail
DATA=${1:-../shared/datasets/cifar10}
OUT=${2:-gpu-results}
mkdir -p "$OUT"
python -c "import compressor, pytest" 2>/dev/null || pip install --quiet -e ".[test]"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/pytest-gpu.txt"
python benchmarks/distill_throughput.py --preset gpu --data "$DATA" --with-compile 2>&1 \
    | tee "$OUT/distill_throughput_gpu.txt"
