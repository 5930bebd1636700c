"""Comparing two models' speed: interleaved rounds, a ratio with a confidence interval.

Timing one model and then the other lets a load change between the two decide the comparison
(identical graphs were timed 1.25-1.5x apart that way). Here the two are timed in interleaved
rounds (A B, B A, ...), each block in a fresh session whose thread pool ends before the other
model's block starts (two open pools would compete for the cores), one ratio per round. The
speedup is the median of the per-round ratios, and its confidence interval comes from order
statistics of those ratios (distribution-free: it assumes only that rounds are independent, and
a fresh session per round makes the session-to-session differences part of that noise). When
a threshold is given and the interval straddles it, rounds are added up to ``max_rounds``; a
ratio still inside its noise is reported as such (:meth:`PairedTiming.verdict` =
"inconclusive"), never decided by a coin flip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compressor.latency.cpu import CpuProbe, CpuUse, combine
from compressor.latency.timing import (
    BACKOFF_S,
    LatencyStats,
    TimingSettings,
    open_session,
    round_quota,
    summarize_rounds,
    time_block,
    timing_threads,
    with_backoff,
)

MIN_ROUNDS = 8
MAX_ROUNDS = 24
CONFIDENCE = 0.90


def median_ci(
    values: list[float] | np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(low, high, coverage): the order-statistic interval for the median of ``values``.

    The k-th smallest and k-th largest values bound the median with probability
    1 - 2 P(Binomial(n, 1/2) < k); k is the largest for which that is at least ``confidence``.
    With fewer than 6 values no such k exists at 90%, and the interval is the full range.
    """
    data = np.sort(np.asarray(values, dtype=float))
    n = data.size
    if n == 0:
        raise ValueError("median_ci needs at least one value")
    k, coverage = 1, 1.0 - 2 * 0.5**n
    for candidate in range(1, n // 2 + 1):
        tail = sum(math.comb(n, i) for i in range(candidate)) / 2**n
        if 1 - 2 * tail >= confidence:
            k, coverage = candidate, 1 - 2 * tail
        else:
            break
    return float(data[k - 1]), float(data[n - k]), float(coverage)


@dataclass(frozen=True)
class PairedTiming:
    """Two models timed interleaved: ``ratio`` = reference / candidate at the percentile."""

    ratio: float  # median of per-round ratios (> 1: the candidate is faster)
    ci_low: float
    ci_high: float
    coverage: float  # the interval's actual confidence
    rounds: int
    reference: LatencyStats
    candidate: LatencyStats
    cpu: CpuUse
    attempts: int = 1

    @property
    def contended(self) -> bool:
        return self.cpu.contended

    def verdict(self, threshold: float) -> str:
        """ "above", "below" or "inconclusive": where the ratio's interval lies against it."""
        if self.ci_low >= threshold:
            return "above"
        if self.ci_high < threshold:
            return "below"
        return "inconclusive"

    def describe(self) -> str:
        return (
            f"{self.ratio:.2f}x ({self.coverage:.0%} CI {self.ci_low:.2f}-{self.ci_high:.2f}, "
            f"{self.rounds} interleaved rounds)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "coverage": self.coverage,
            "rounds": self.rounds,
            "attempts": self.attempts,
            "cpu": self.cpu.to_dict(),
            "contended": self.contended,
            "reference": self.reference.to_dict(),
            "candidate": self.candidate.to_dict(),
        }


def measure_paired(
    reference: Path | bytes,
    candidate: Path | bytes,
    input_shape: tuple[int, int, int],
    settings: TimingSettings,
    percentile: float = 90.0,
    *,
    threshold: float | None = None,
    min_rounds: int = MIN_ROUNDS,
    max_rounds: int = MAX_ROUNDS,
    backoff: tuple[float, ...] = BACKOFF_S,
) -> PairedTiming:
    """Time ``reference`` and ``candidate`` interleaved; re-measure after a back-off while the
    host is contended (the last result says whether it still was)."""
    return with_backoff(
        lambda: _measure_once(
            reference, candidate, input_shape, settings, percentile, threshold, min_rounds,
            max_rounds,
        ),
        backoff,
    )  # fmt: skip


def _measure_once(
    reference: Path | bytes,
    candidate: Path | bytes,
    input_shape: tuple[int, int, int],
    settings: TimingSettings,
    percentile: float,
    threshold: float | None,
    min_rounds: int,
    max_rounds: int,
) -> PairedTiming:
    models = (reference, candidate)
    iterations, seconds = round_quota(settings, min_rounds)
    chunks: list[list[np.ndarray]] = [[], []]
    colds: list[list[float]] = [[], []]
    uses: list[CpuUse] = []
    threads = timing_threads(settings)

    def add_rounds(count: int) -> None:
        for _ in range(count):
            r = len(chunks[0])
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for i in order:
                session, feed, cold = open_session(models[i], input_shape, settings, seed=0)
                probe = CpuProbe(threads)
                chunks[i].append(time_block(session, feed, iterations, seconds))
                uses.append(probe.stop())
                colds[i].append(cold)
                del session  # its thread pool ends before the other model's block

    add_rounds(min_rounds)
    timing = _summarize(chunks, colds, percentile, settings, uses)
    while (
        threshold is not None
        and timing.verdict(threshold) == "inconclusive"
        and timing.rounds < max_rounds
    ):
        add_rounds(min(4, max_rounds - timing.rounds))
        timing = _summarize(chunks, colds, percentile, settings, uses)
    return timing


def _summarize(
    chunks: list[list[np.ndarray]],
    colds: list[list[float]],
    percentile: float,
    settings: TimingSettings,
    uses: list[CpuUse],
) -> PairedTiming:
    cpu = combine(uses)
    ref_at = [float(np.percentile(c, percentile)) for c in chunks[0]]
    cand_at = [float(np.percentile(c, percentile)) for c in chunks[1]]
    ratios = [r / max(c, 1e-9) for r, c in zip(ref_at, cand_at, strict=True)]
    low, high, coverage = median_ci(ratios)
    stats = [
        summarize_rounds(chunks[i], percentile, float(np.median(colds[i])), settings, cpu)
        for i in (0, 1)
    ]
    return PairedTiming(
        round(float(np.median(ratios)), 4), round(low, 4), round(high, 4), round(coverage, 4),
        len(ratios), stats[0], stats[1], cpu,
    )  # fmt: skip
