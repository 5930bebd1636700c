"""The timers selection calls: onnxruntime under a profile's settings, single or paired, and
the stop when a timing was contended. Tests replace them with constructed latencies."""

from __future__ import annotations

from typing import NoReturn

from compressor.errors import LatencyInconclusive
from compressor.latency.cpu import CpuUse
from compressor.latency.paired import PairedTiming, measure_paired
from compressor.latency.profiles import LatencyProfile
from compressor.latency.timing import TimingSettings, measure_onnx
from compressor.selection.table import PairTimer, Timer


def profile_timer(profile: LatencyProfile) -> Timer:
    """The real timer: onnxruntime on CPU under the profile's settings."""
    settings = TimingSettings.from_profile(profile)
    return lambda model, shape: measure_onnx(model, shape, settings, profile.percentile)


def profile_pair_timer(profile: LatencyProfile) -> PairTimer:
    """The real paired timer: both graphs interleaved under the profile's settings."""
    settings = TimingSettings.from_profile(profile)

    def pair(ref: bytes, cand: bytes, shape: tuple[int, int, int], threshold: float | None):
        return measure_paired(ref, cand, shape, settings, profile.percentile, threshold=threshold)

    return pair


def pair_from_timer(timer: Timer) -> PairTimer:
    """A paired timer made of two single timings (constructed timings in tests): the ratio of
    the two, with no uncertainty."""

    def pair(ref: bytes, cand: bytes, shape: tuple[int, int, int], _threshold: float | None):
        ref_stats, cand_stats = timer(ref, shape), timer(cand, shape)
        ratio = round(ref_stats.at_percentile_ms / max(cand_stats.at_percentile_ms, 1e-9), 4)
        cpu = CpuUse(1.0, None, 1, 0.0)
        if ref_stats.contended or cand_stats.contended:
            cpu = CpuUse(0.0, None, 1, 0.0)
        return PairedTiming(ratio, ratio, ratio, 1.0, 1, ref_stats, cand_stats, cpu)

    return pair


def inconclusive(what: str, cpu: dict[str, object] | CpuUse | None, attempts: int) -> NoReturn:
    """Stop: a latency decision would rest on a contended measurement."""
    use = cpu.to_dict() if isinstance(cpu, CpuUse) else (cpu or {})
    raise LatencyInconclusive(
        f"latency decision inconclusive: the host was contended while timing {what} (the "
        f"process got {float(use.get('cpu_share', 0.0)):.0%} of the CPU time its "
        f"{use.get('threads', '?')} thread(s) asked for, after {attempts} attempt(s)); nothing "
        "was chosen: rerun when the host is idle"
    )
