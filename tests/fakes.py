"""Constructed inputs shared by the tests: image folders, latency statistics, timers, profiles.

One place for each fake, so a change to :class:`LatencyStats` or the profile schema is one edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from compressor.latency.profiles import load_profile
from compressor.latency.timing import LatencyStats
from tests.conftest import write_profile

SMALL = ("cifar_resnet8_w8", "cifar_resnet8_w16", "cifar_resnet14_w16", "cifar_resnet20_w16")


def flat_stats(
    at: float, p50: float | None = None, p90: float | None = None, percentile: float = 90.0
) -> LatencyStats:
    """A latency of ``at`` ms at every percentile (``p50``/``p90`` overridable)."""
    return LatencyStats(
        p50_ms=at if p50 is None else p50,
        p90_ms=at if p90 is None else p90,
        p99_ms=at,
        mean_ms=at,
        std_ms=0.0,
        min_ms=at,
        at_percentile_ms=at,
        percentile=percentile,
        iterations=20,
        cold_start_ms=1.0,
        batch_size=1,
        intra_op_threads=1,
    )


def timer_from(latency: dict[str, float], calls: list[str] | None = None):
    """A timer that returns the constructed latency of the named candidate."""

    def timer(model: bytes, shape: tuple[int, int, int]) -> LatencyStats:
        name = model.decode()
        if calls is not None:
            calls.append(name)
        return flat_stats(latency[name])

    return timer


def budget_profile(tmp_path: Path, budget: float, margin: float = 0.1):
    path = write_profile(
        tmp_path / "p.toml", **{"budget.latency_ms": budget, "budget.safety_margin": margin}
    )
    return load_profile(str(path))


def write_image_folder(
    root: Path,
    per_class: int,
    classes: Sequence[str] = ("class0", "class1"),
    size: tuple[int, int] = (8, 8),
    mode: str = "RGB",
    seed: int = 0,
) -> list[tuple[np.ndarray, int]]:
    """``root/<class>/<i>.png`` of random pixels (``size`` is height x width; ``mode`` "RGB" or
    "L"), the same files for the same seed. Returns each image's pixels and class index, in
    the order written."""
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if mode == "RGB" else size
    written = []
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(root / name / f"{i}.png")
            written.append((pixels, index))
    return written


def full_report() -> dict[str, Any]:
    """A small report with every key report.json (schema 1) has, plus the optional extras."""
    classes = ["zero", "one", "two"]
    history = [
        {
            "epoch": e,
            "loss": 1.2 / e,
            "ce": 1.0 / e,
            "distill": 0.5 / e,
            "right": 0.3 / e,
            "rectified": 12.0,
            "b": 1.0 - e / 4,
            "lr": 0.1,
            "train_top1": 0.5 + e / 10,
            "val_top1": 0.45 + e / 10,
            "teacher_wrong_fraction": 0.1,
            "teacher_wrong_per_class": [0.1, 0.05, 0.15],
            "seconds": 1.0,
        }
        for e in (1, 2, 3)
    ]
    gate = {"passed": True, "value": 0.9, "threshold": 0.5, "comparison": ">=", "detail": "ok"}
    cand = {"params": 1000, "p50_ms": 0.1, "p90_ms": 0.12, "at_percentile_ms": 0.12}
    return {
        "schema_version": 1,
        "passed": False,
        "exit_code": 1,
        "failed_gates": ["latency_p90"],
        "teacher": {
            "arch": "resnet8",
            "path": "/t/teacher.pt",
            "format": "bundle",
            "sha256": "ab" * 32,
        },
        "profile": {
            "name": "tiny",
            "description": "tests",
            "latency_ms": 1.0,
            "percentile": 90.0,
            "max_top1_drop": 0.05,
            "min_top1": 0.0,
            "min_agreement": 0.99,
            "max_abs_logit_diff": 0.001,
            "source": "/p/tiny.toml",
        },
        "data": {"class_names": classes, "test_source": "held-out test folder"},
        "selection": {
            "family": "mobilenet",
            "chosen": "s1",
            "budget_ms": 1.0,
            "target_ms": 0.8,
            "percentile": 90.0,
            "calibrated_for": "pi5",
            "candidates": [
                {**cand, "name": "s0", "mflops": 1.0, "predicted_ms": 0.3, "fits": True},
                {**cand, "name": "s1", "mflops": 10.0, "predicted_ms": 0.7, "fits": True},
                {
                    **cand,
                    "name": "s2",
                    "mflops": 100.0,
                    "p90_ms": 2.0,
                    "at_percentile_ms": 2.0,
                    "predicted_ms": 3.0,
                    "fits": False,
                },
                {
                    "name": "s3",
                    "params": 9,
                    "mflops": 900.0,
                    "p50_ms": None,
                    "p90_ms": None,
                    "at_percentile_ms": None,
                    "predicted_ms": None,
                    "fits": None,
                },
            ],
        },
        "distillation": {
            "loss": {
                "method": "kd",
                "bias_aware": True,
                "ce_weight": 0.5,
                "temperature": 4.0,
                "schedule": "linear",
                "rectification": "swap",
            },
            "train": {"epochs": 3},
            "device": "cpu",
            "best_epoch": 3,
            "best_val_top1": 0.75,
            "teacher_val_top1": 0.8,
            "seconds": 3.0,
            "history": history,
        },
        "bias": {
            "teacher_train_error": 0.1,
            "teacher_train_error_per_class": dict(zip(classes, [0.1, 0.05, 0.15], strict=True)),
            "teacher_confusion": [[90, 4, 6], [2, 95, 3], [10, 5, 85]],
        },
        "accuracy": {
            "images": 100,
            "teacher_top1": 0.8,
            "student_top1": 0.78,
            "student_top5": 0.99,
            "top1_drop": 0.02,
        },
        "parity": {
            "max_abs_logit_diff": 1e-5,
            "mean_abs_logit_diff": 1e-6,
            "top1_agreement": 1.0,
            "images": 100,
        },
        "latency": {
            "p50_ms": 0.5,
            "p90_ms": 0.6,
            "p99_ms": 0.9,
            "mean_ms": 0.52,
            "std_ms": 0.05,
            "at_percentile_ms": 0.6,
            "percentile": 90.0,
            "iterations": 200,
            "cold_start_ms": 12.0,
            "batch_size": 1,
            "intra_op_threads": 1,
            "repeats_at_percentile_ms": [0.6, 0.61, 0.62],
            "spread": 0.03,
            "predicted_target_ms": 1.2,
            "budget_utilisation": 1.2,
        },
        "gates": [
            {**gate, "name": "min_top1"},
            {**gate, "name": "latency_p90", "passed": False, "detail": "1.2 ms > 1 ms"},
        ],
        "size": {
            "teacher_params": 78000,
            "student_params": 1000,
            "param_ratio": 78.0,
            "teacher_mflops": 12.0,
            "student_mflops": 1.0,
            "onnx_bytes": 40960,
        },
        "provenance": {
            "created_utc": "2025-01-01T00:00:00+00:00",
            "command": ["compressor", "run", "--out", "my run"],
            "seed": 0,
            "versions": {"python": "3.11", "compressor": "0.1.0"},
            "hardware": {"platform": "Linux", "cpu": "x86", "cpu_count": 4, "cuda": None},
        },
        "int8": {"size_bytes": 12000, "top1": 0.77, "settings": {"per_channel": True}},
        "warnings": ["teacher input size differs"],
    }


@dataclass
class SearchRow:
    """A trajectory step as the search sees it: a name, a latency once timed, qualifies or not."""

    name: str
    at_percentile_ms: float | None = None
    fits: bool = False

    @property
    def qualifies(self) -> bool:
        return self.fits
