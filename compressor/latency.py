"""The only timing code in compressor: onnxruntime sessions under fixed settings, percentiles.

Selection and verification both call :func:`measure_onnx`, so a candidate is timed exactly as the
shipped model is verified. Method (as in Olive's latency metric): create the session with fixed
thread counts, report session creation + first run as *cold start*, run ``warmup_runs`` untimed,
then time single runs until both ``min_iterations`` and ``min_seconds`` are reached, and quote
percentiles of the per-run wall times.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from compressor.profile import LatencyProfile

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class TimingSettings:
    """How to run and time a model; built from a profile so every caller times the same way."""

    batch_size: int = 1
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    execution_mode: str = "sequential"
    graph_optimization: str = "all"
    warmup_runs: int = 10
    min_iterations: int = 100
    min_seconds: float = 1.0

    @classmethod
    def from_profile(cls, profile: LatencyProfile) -> TimingSettings:
        return cls(
            batch_size=profile.batch_size,
            intra_op_threads=profile.intra_op_threads,
            inter_op_threads=profile.inter_op_threads,
            execution_mode=profile.execution_mode,
            graph_optimization=profile.graph_optimization,
            warmup_runs=profile.warmup_runs,
            min_iterations=profile.min_iterations,
            min_seconds=profile.min_seconds,
        )


@dataclass(frozen=True)
class LatencyStats:
    """Per-batch latency in milliseconds."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    at_percentile_ms: float  # at the profile's percentile
    percentile: float
    iterations: int
    cold_start_ms: float  # session creation + first run
    batch_size: int
    intra_op_threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def session_options(settings: TimingSettings) -> ort.SessionOptions:
    """onnxruntime options with the profile's threads, mode and optimisation level."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL
        if settings.execution_mode == "parallel"
        else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    options.graph_optimization_level = _OPT_LEVELS[settings.graph_optimization]
    options.log_severity_level = 3
    return options


def create_session(model: Path | bytes, settings: TimingSettings) -> ort.InferenceSession:
    """A CPU session for an ONNX file (or serialized bytes) under ``settings``."""
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(
        source, sess_options=session_options(settings), providers=["CPUExecutionProvider"]
    )


def measure_onnx(
    model: Path | bytes,
    input_shape: tuple[int, int, int],
    settings: TimingSettings,
    percentile: float = 90.0,
    seed: int = 0,
) -> LatencyStats:
    """Time one ONNX model on CPU with a fixed random batch of shape (batch, *input_shape)."""
    times_ms, cold_ms = _time_session(model, input_shape, settings, seed)
    return summarize(times_ms, percentile, cold_ms, settings)


def measure_alternating(
    models: Sequence[Path | bytes],
    input_shape: tuple[int, int, int],
    settings: TimingSettings,
    percentile: float = 90.0,
    rounds: int = 3,
) -> list[LatencyStats]:
    """Time several models in turn (A B, B A, A B, ...), a fresh session each time, and pool each
    model's runs over the rounds.

    Timing one model after the other lets a load change between the two decide a comparison;
    alternating, with the order flipped every round, makes machine noise hit them alike. Used
    where two models are compared (int8 vs fp32), not where one is checked against a budget.
    """
    pooled: list[list[np.ndarray]] = [[] for _ in models]
    cold: list[list[float]] = [[] for _ in models]
    for r in range(rounds):
        order = range(len(models)) if r % 2 == 0 else reversed(range(len(models)))
        for i in order:
            times_ms, cold_ms = _time_session(models[i], input_shape, settings, seed=r)
            pooled[i].append(times_ms)
            cold[i].append(cold_ms)
    return [
        summarize(np.concatenate(p), percentile, float(np.median(c)), settings)
        for p, c in zip(pooled, cold, strict=True)
    ]


def _time_session(
    model: Path | bytes, input_shape: tuple[int, int, int], settings: TimingSettings, seed: int
) -> tuple[np.ndarray, float]:
    """(per-run milliseconds after warm-up, cold start ms) of one fresh session."""
    rng = np.random.default_rng(seed)
    batch = rng.standard_normal((settings.batch_size, *input_shape)).astype(np.float32)
    start = time.perf_counter()
    session = create_session(model, settings)
    feed = {session.get_inputs()[0].name: batch}
    session.run(None, feed)
    cold_ms = (time.perf_counter() - start) * 1e3
    for _ in range(settings.warmup_runs):
        session.run(None, feed)
    times: list[float] = []
    began = time.perf_counter()
    while (
        len(times) < settings.min_iterations or time.perf_counter() - began < settings.min_seconds
    ):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return np.asarray(times) * 1e3, cold_ms


def summarize(
    times_ms: np.ndarray, percentile: float, cold_start_ms: float, settings: TimingSettings
) -> LatencyStats:
    """Percentiles of a sample of per-run times (ms)."""
    p50, p90, p99, at = np.percentile(times_ms, [50, 90, 99, percentile])
    return LatencyStats(
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(times_ms.mean()),
        std_ms=float(times_ms.std()),
        min_ms=float(times_ms.min()),
        at_percentile_ms=float(at),
        percentile=float(percentile),
        iterations=int(times_ms.size),
        cold_start_ms=float(cold_start_ms),
        batch_size=settings.batch_size,
        intra_op_threads=settings.intra_op_threads,
    )
