"""Does the chosen student meet its budget, and do calibrated predictions hold?

1. Repeatability: select a student for a profile with real onnxruntime timings, then verify its
   latency ``--repeats`` times (fresh session each time) and count how often p<percentile> stays
   within the budget; report the budget utilisation (p / budget).
2. Calibration accuracy: emulate two devices on this machine. The "target" runs the profile with
   ``--target-threads``/``--target-batch``; the "host" runs it as written. Calibrate on the target,
   predict every candidate's target latency from host timings, then measure each candidate on the
   target and print the prediction errors (median |error| is the headline number).

    python benchmarks/selection_and_calibration.py --profile cpu-1thread
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time

import torch

from compressor.export.to_onnx import onnx_bytes
from compressor.latency.profiles import load_profile
from compressor.latency.timing import TimingSettings, measure_onnx
from compressor.models.registry import build_model, default_family
from compressor.report.provenance import hardware, versions
from compressor.selection.choose import select_student
from compressor.selection.target_calibration import calibration_table
from compressor.selection.timers import profile_timer


def repeatability(profile_name: str, repeats: int) -> None:
    profile = load_profile(profile_name)
    family = default_family(profile.input_shape[1:])
    selection = select_student(profile, 10, family)
    torch.manual_seed(0)
    model = onnx_bytes(
        build_model(selection.chosen, 10, profile.input_shape[0]),
        profile.input_shape,
        profile.opset,
    )
    settings = TimingSettings.from_profile(profile)
    values = [
        measure_onnx(
            model, profile.input_shape, settings, profile.percentile, seed=i
        ).at_percentile_ms
        for i in range(repeats)
    ]
    within = sum(v <= profile.latency_ms for v in values)
    timed = [c for c in selection.candidates if c.fits is not None]
    print(f"\n## Repeatability: profile {profile.name}, chosen {selection.chosen}")
    print(
        f"candidates timed: {len(timed)} of {len(selection.candidates)}; target "
        f"{profile.target_ms:.3f} ms = budget {profile.latency_ms:g} ms "
        f"less {profile.safety_margin:.0%}"
    )
    print(f"| repeat | p{profile.percentile:g} ms | within budget | utilisation |")
    print("| ---: | ---: | --- | ---: |")
    for i, v in enumerate(values, 1):
        print(
            f"| {i} | {v:.3f} | {'yes' if v <= profile.latency_ms else 'NO'} | "
            f"{v / profile.latency_ms:.0%} |"
        )
    print(
        f"within budget: {within}/{repeats}; median utilisation "
        f"{statistics.median(values) / profile.latency_ms:.0%}"
    )


def calibration(profile_name: str, target_threads: int | None, target_batch: int | None) -> None:
    host = load_profile(profile_name)
    target = dataclasses.replace(
        host,
        intra_op_threads=target_threads or host.intra_op_threads,
        batch_size=target_batch or host.batch_size,
    )
    table = calibration_table(target, profile_timer(target), device="emulated target")
    calibrated = dataclasses.replace(
        host, calibration=table, latency_ms=1e6
    )  # time every candidate
    family = default_family(host.input_shape[1:])
    selection = select_student(calibrated, 10, family, patience=99)
    target_timer = profile_timer(target)
    print(
        f"\n## Calibration: host = {host.intra_op_threads} thread(s), batch {host.batch_size}; "
        f"target = {target.intra_op_threads} thread(s), batch {target.batch_size}"
    )
    print("| candidate | MFLOPs | host ms | predicted target ms | measured target ms | error |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    errors = []
    for cand in selection.candidates:
        torch.manual_seed(0)
        model = build_model(cand.name, 10, host.input_shape[0])
        measured = target_timer(
            onnx_bytes(model, host.input_shape, host.opset), host.input_shape
        ).at_percentile_ms
        err = (cand.predicted_ms - measured) / measured
        errors.append(abs(err))
        print(
            f"| {cand.name} | {cand.mflops:.1f} | {cand.at_percentile_ms:.3f} | "
            f"{cand.predicted_ms:.3f} | {measured:.3f} | {err:+.1%} |"
        )
    print(
        f"median |error| {statistics.median(errors):.1%}, max |error| {max(errors):.1%} "
        f"over {len(errors)} candidates (suite: {', '.join(table.models)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-1thread")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--target-threads", type=int, default=None)
    parser.add_argument("--target-batch", type=int, default=None)
    args = parser.parse_args()
    print("command: python " + " ".join(sys.argv))
    print(f"hardware: {hardware()}")
    print(f"versions: {versions()}")
    start = time.perf_counter()
    repeatability(args.profile, args.repeats)
    calibration(args.profile, args.target_threads or None, args.target_batch or 4)
    if args.target_threads is None:
        calibration(args.profile, 2, None)
    print(f"\nwall time {time.perf_counter() - start:.0f} s on {platform.node()}")


if __name__ == "__main__":
    main()
