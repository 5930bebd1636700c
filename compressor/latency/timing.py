"""The only timing code in compressor: onnxruntime sessions under fixed settings, percentiles.

Selection and verification both call :func:`measure_onnx`, so a candidate is timed exactly as the
shipped model is verified. Method (as in Olive's latency metric): create the session with fixed
thread counts, report session creation + first run as *cold start*, run ``warmup_runs`` untimed,
then time single runs until both ``min_iterations`` and ``min_seconds`` are reached.

The runs are taken in :data:`ROUNDS` rounds, each in a fresh session, and a percentile is the
**median of the per-round percentiles** (docs/selection.md has the measurements that chose
this): the same graph runs up to 1.6x slower in one session than in another on this 2-core
host, and a burst from another process inflates one round; neither moves the median much.
Every measurement records the CPU its process got (:mod:`compressor.latency.cpu`); a contended one
is repeated after a bounded back-off and, if still contended, returned marked ``contended`` for
the caller to call inconclusive. Two models compared with each other are timed interleaved by
:mod:`compressor.latency.paired`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort

from compressor.latency.cpu import CpuProbe, CpuUse, combine, cpu_allowance, expected_threads
from compressor.latency.profiles import LatencyProfile

ROUNDS = 5  # rounds per measurement; the estimate is the median of their percentiles
BACKOFF_S = (2.0, 5.0)  # waits before re-measuring a contended timing (then: inconclusive)

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
    rounds: int = 1  # percentiles are medians of this many per-round percentiles
    cpu: dict[str, Any] | None = field(default=None, compare=False)  # CpuUse.to_dict()
    attempts: int = 1  # measurements taken (more than 1: contention was found and waited out)

    @property
    def contended(self) -> bool:
        """The process did not get the CPU it asked for while this was timed."""
        return bool(self.cpu and self.cpu.get("contended"))

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
    backoff: tuple[float, ...] = BACKOFF_S,
    rounds: int = ROUNDS,
) -> LatencyStats:
    """Time one ONNX model on CPU with a fixed random batch of shape (batch, *input_shape).

    A contended measurement is repeated after each wait in ``backoff``; the last one is returned
    (``contended`` says whether the host was still busy, ``attempts`` how many were taken).
    """

    def once() -> LatencyStats:
        iterations, seconds = round_quota(settings, rounds)
        threads = timing_threads(settings)
        chunks, colds, uses = [], [], []
        for _ in range(rounds):
            session, feed, cold_ms = open_session(model, input_shape, settings, seed)
            probe = CpuProbe(threads)
            chunks.append(time_block(session, feed, iterations, seconds))
            uses.append(probe.stop())
            colds.append(cold_ms)
            del session  # its worker threads end before the next session starts
        cold = float(np.median(colds))
        return summarize_rounds(chunks, percentile, cold, settings, combine(uses))

    return with_backoff(once, backoff)


Measured = TypeVar("Measured")


def with_backoff(measure: Callable[[], Measured], backoff: tuple[float, ...]) -> Measured:
    """``measure()``, repeated after each wait in ``backoff`` while it reports contention; the
    result's ``attempts`` counts the measurements taken (any frozen dataclass with
    ``contended`` and ``attempts``: a single timing or a paired one)."""
    result = measure()
    for attempt, wait in enumerate(backoff, start=2):
        if not result.contended:
            break
        time.sleep(wait)
        result = replace(measure(), attempts=attempt)
    return result


def timing_threads(settings: TimingSettings) -> int:
    """Threads a timing should keep busy: the profile's, capped by the container's CPUs."""
    return expected_threads(settings.intra_op_threads, cpu_allowance())


def open_session(
    model: Path | bytes, input_shape: tuple[int, int, int], settings: TimingSettings, seed: int
) -> tuple[ort.InferenceSession, dict[str, np.ndarray], float]:
    """(session, feed, cold start ms): a fresh session, run once, then ``warmup_runs`` untimed."""
    rng = np.random.default_rng(seed)
    batch = rng.standard_normal((settings.batch_size, *input_shape)).astype(np.float32)
    start = time.perf_counter()
    session = create_session(model, settings)
    feed = {session.get_inputs()[0].name: batch}
    session.run(None, feed)
    cold_ms = (time.perf_counter() - start) * 1e3
    for _ in range(settings.warmup_runs):
        session.run(None, feed)
    return session, feed, cold_ms


def time_block(
    session: ort.InferenceSession, feed: dict[str, np.ndarray], iterations: int, seconds: float
) -> np.ndarray:
    """Per-run milliseconds of single runs until both ``iterations`` and ``seconds`` are met."""
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < iterations or time.perf_counter() - began < seconds:
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return np.asarray(times) * 1e3


def round_quota(settings: TimingSettings, rounds: int) -> tuple[int, float]:
    """(iterations, seconds) per round so that ``rounds`` rounds meet the profile's minimums."""
    return max(math.ceil(settings.min_iterations / rounds), 10), settings.min_seconds / rounds


def summarize_rounds(
    chunks: list[np.ndarray],
    percentile: float,
    cold_start_ms: float,
    settings: TimingSettings,
    cpu: CpuUse | None = None,
) -> LatencyStats:
    """Percentiles as the median of per-round percentiles; mean, std and min over all runs."""
    per_round = np.array([np.percentile(c, [50, 90, 99, percentile]) for c in chunks])
    p50, p90, p99, at = np.median(per_round, axis=0)
    pooled = np.concatenate(chunks)
    return LatencyStats(
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(pooled.mean()),
        std_ms=float(pooled.std()),
        min_ms=float(pooled.min()),
        at_percentile_ms=float(at),
        percentile=float(percentile),
        iterations=int(pooled.size),
        cold_start_ms=float(cold_start_ms),
        batch_size=settings.batch_size,
        intra_op_threads=settings.intra_op_threads,
        rounds=len(chunks),
        cpu=cpu.to_dict() if cpu else None,
    )


def summarize(
    times_ms: np.ndarray, percentile: float, cold_start_ms: float, settings: TimingSettings
) -> LatencyStats:
    """Percentiles of one sample of per-run times (ms), pooled (one round)."""
    return summarize_rounds([np.asarray(times_ms)], percentile, cold_start_ms, settings)
