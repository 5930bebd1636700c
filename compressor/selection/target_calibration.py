"""Target calibration: predict latency on a device you cannot build on.

``compressor profiles calibrate`` runs on the target device: it times a fixed reference suite of
ONNX models that the package generates itself (architectures from the registry with fixed
seeds, exported at the profile's input shape) and writes the measured latencies into a new
profile's ``[calibration]`` table. At selection time the same suite is timed on the build host;
the per-model ratio target/host, interpolated in log-FLOPs, turns a candidate's host latency into
a predicted target latency.
"""

from __future__ import annotations

import bisect
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from compressor.errors import CompressorError
from compressor.export.to_onnx import onnx_bytes
from compressor.files import write_text_atomic
from compressor.latency.profiles import Calibration, LatencyProfile, profile_from_dict
from compressor.latency.timing import LatencyStats
from compressor.models.registry import build_model, count_flops, default_family, get_family

SUITE_VERSION = 1
Timer = Callable[[bytes, tuple[int, int, int]], LatencyStats]


def reference_suite(input_shape: tuple[int, int, int]) -> tuple[str, ...]:
    """Five models spanning the cost range of the default family for this input size."""
    ladder = get_family(default_family(input_shape[1:])).ladder  # type: ignore[arg-type]
    picks = sorted({round(i * (len(ladder) - 1) / 4) for i in range(5)})
    return tuple(ladder[i] for i in picks)


def time_suite(
    models: tuple[str, ...], input_shape: tuple[int, int, int], timer: Timer
) -> tuple[list[float], list[float]]:
    """(MFLOPs, latency at the timer's percentile) of each suite model; seeded weights."""
    mflops, latency = [], []
    for name in models:
        torch.manual_seed(0)
        model = build_model(name, 10, input_shape[0])
        mflops.append(count_flops(model, input_shape) / 1e6)
        latency.append(timer(onnx_bytes(model, input_shape, 18), input_shape).at_percentile_ms)
    return mflops, latency


@dataclass(frozen=True)
class LatencyPredictor:
    """Maps host latency to predicted target latency by a ratio interpolated in log-FLOPs."""

    mflops: tuple[float, ...]  # ascending
    ratios: tuple[float, ...]  # target / host for each suite model

    @classmethod
    def from_measurements(
        cls, mflops: list[float], host_ms: list[float], target_ms: list[float]
    ) -> LatencyPredictor:
        rows = sorted(zip(mflops, host_ms, target_ms, strict=True))
        return cls(tuple(r[0] for r in rows), tuple(r[2] / r[1] for r in rows))

    def ratio(self, mflops: float) -> float:
        """Ratio at ``mflops``: linear in log-FLOPs between suite models, constant beyond."""
        xs = [math.log(m) for m in self.mflops]
        x = math.log(max(mflops, 1e-9))
        if x <= xs[0]:
            return self.ratios[0]
        if x >= xs[-1]:
            return self.ratios[-1]
        i = bisect.bisect_right(xs, x)
        t = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
        return self.ratios[i - 1] + t * (self.ratios[i] - self.ratios[i - 1])

    def predict(self, host_ms: float, mflops: float) -> float:
        return host_ms * self.ratio(mflops)


def host_predictor(
    calibration: Calibration, input_shape: tuple[int, int, int], timer: Timer
) -> LatencyPredictor:
    """Time the calibration's suite on this host and relate it to the target's numbers."""
    if calibration.suite_version != SUITE_VERSION:
        raise CompressorError(
            f"profile calibration uses suite v{calibration.suite_version}, this compressor has "
            f"v{SUITE_VERSION}: re-run `compressor profiles calibrate` on the target"
        )
    _, host_ms = time_suite(calibration.models, input_shape, timer)
    return LatencyPredictor.from_measurements(
        list(calibration.mflops), host_ms, list(calibration.target_ms)
    )


def calibration_table(profile: LatencyProfile, timer: Timer, device: str) -> Calibration:
    """Time the reference suite here (on the target) under the profile's settings."""
    models = reference_suite(profile.input_shape)
    mflops, target_ms = time_suite(models, profile.input_shape, timer)
    return Calibration(
        device=device,
        measured_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        suite_version=SUITE_VERSION,
        models=models,
        mflops=tuple(round(m, 4) for m in mflops),
        target_ms=tuple(round(t, 5) for t in target_ms),
    )


def _toml_list(values: tuple[object, ...]) -> str:
    return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in values) + "]"


def write_calibrated_profile(base: Path, out: Path, name: str, calibration: Calibration) -> Path:
    """Copy ``base`` (comments kept), rename it, and replace its ``[calibration]`` table."""
    text = base.read_text(encoding="utf-8")
    text = re.split(r"(?m)^\[calibration\]\s*$", text)[0].rstrip() + "\n"
    text, renamed = re.subn(r"(?m)^name\s*=.*$", f'name = "{name}"', text, count=1)
    if not renamed:
        text = f'name = "{name}"\n' + text
    text += (
        "\n# Measured on the target by `compressor profiles calibrate`; selection on another\n"
        "# machine times the same suite there and scales candidates by target/host ratios.\n"
        "[calibration]\n"
        f'device = "{calibration.device}"\n'
        f'measured_utc = "{calibration.measured_utc}"\n'
        f"suite_version = {calibration.suite_version}\n"
        f"models = {_toml_list(calibration.models)}\n"
        f"mflops = {_toml_list(calibration.mflops)}\n"
        f"target_ms = {_toml_list(calibration.target_ms)}\n"
    )
    profile_from_dict(tomllib.loads(text), str(out))  # what we write must load
    write_text_atomic(out, text)
    return out
