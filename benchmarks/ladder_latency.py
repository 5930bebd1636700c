"""Latency of every model of a student family under a profile, next to typical teachers.

Shows which part of a budget a ladder can use: for `mobile-224` (15 ms at p90, 2 threads) the
default `torchvision_mix` ladder should reach at least 60% of the budget with a model smaller
than a typical teacher. Each model is exported with compressor's exporter and timed with
compressor's timer (the profile's settings), so the numbers are what selection would see.

    python benchmarks/ladder_latency.py --profile mobile-224 --family torchvision_mix \
        --teachers resnet50,efficientnet_b3
"""

from __future__ import annotations

import argparse
import os
import platform

import onnxruntime
import torch

from compressor.export.to_onnx import onnx_bytes
from compressor.latency.profiles import load_profile
from compressor.models.registry import FAMILIES, build_model, count_flops, count_params
from compressor.selection.timers import profile_timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="mobile-224")
    parser.add_argument("--family", default="torchvision_mix")
    parser.add_argument("--teachers", default="resnet50,efficientnet_b3")
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    profile = load_profile(args.profile)
    timer = profile_timer(profile)
    shape = profile.input_shape
    names = [*FAMILIES[args.family].ladder, *[t for t in args.teachers.split(",") if t]]
    print(f"profile {profile.name}: budget {profile.latency_ms:g} ms at p{profile.percentile:g}, "
          f"{profile.intra_op_threads} thread(s), batch {profile.batch_size}")  # fmt: skip
    print(f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores); "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")  # fmt: skip
    print("| model | role | params (M) | MFLOPs | p50 ms | p90 ms | budget used at p90 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        model = build_model(name, args.classes, shape[0])
        stats = timer(onnx_bytes(model, shape, profile.opset), shape)
        role = "ladder" if name in FAMILIES[args.family].ladder else "teacher"
        print(
            f"| {name} | {role} | {count_params(model) / 1e6:.2f} | "
            f"{count_flops(model, shape) / 1e6:.0f} | {stats.p50_ms:.2f} | {stats.p90_ms:.2f} | "
            f"{100 * stats.p90_ms / profile.latency_ms:.0f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
