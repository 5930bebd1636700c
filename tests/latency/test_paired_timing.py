"""Repeatable latency decisions: the estimator, paired timing, contention and its exit code.

The clock is replaced where a decision is judged (constructed per-run times, a faked CPU probe),
so these tests check compressor's arithmetic and control flow, never a wall-clock speed; the
real-session tests only check that real sessions ran and were summarised.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from compressor.errors import LatencyInconclusive
from compressor.export.to_onnx import onnx_bytes
from compressor.export.verify import latency_gate
from compressor.latency import cpu as cpu_check
from compressor.latency import paired as paired_timing
from compressor.latency import timing as latency
from compressor.latency.cpu import CpuAllowance, CpuProbe, CpuUse
from compressor.latency.paired import PairedTiming, measure_paired, median_ci
from compressor.latency.timing import TimingSettings, measure_onnx, summarize_rounds
from compressor.models.registry import build_model
from compressor.report.model import speedup_gates, verdict
from compressor.selection import choose as select
from compressor.selection import sources
from tests.fakes import SMALL, budget_profile, flat_stats, timer_from

pytestmark = pytest.mark.usefixtures("judge_contention")  # contention judged as in production

SETTINGS = TimingSettings(min_iterations=10, min_seconds=0.0, warmup_runs=0)
IDLE, BUSY = CpuUse(0.99, 0.01, 2, 1.0), CpuUse(0.66, 0.5, 2, 1.0)


# --- the estimator -----------------------------------------------------------------------------


def test_percentiles_are_medians_of_per_round_percentiles() -> None:
    """One round hit by a burst (every run 10x slower) moves the pooled p90 to the burst; the
    median of per-round p90s stays on the quiet rounds."""
    quiet = [np.linspace(1.0, 2.0, 11) for _ in range(4)]
    burst = np.full(11, 20.0)
    stats = summarize_rounds([*quiet, burst], 90.0, 3.0, SETTINGS)
    assert stats.rounds == 5 and stats.iterations == 55
    assert stats.at_percentile_ms == pytest.approx(1.9)  # p90 of 1.0..2.0 in steps of 0.1
    assert stats.p50_ms == pytest.approx(1.5)
    assert np.percentile(np.concatenate([*quiet, burst]), 90) == 20.0  # what pooling would say
    assert stats.min_ms == 1.0 and stats.cold_start_ms == 3.0


@pytest.mark.parametrize(
    ("n", "low_index", "coverage"),
    [(5, 0, 1 - 2 / 32), (8, 1, 1 - 2 * 9 / 256), (12, 2, 1 - 2 * 79 / 4096), (24, 7, None)],
)
def test_median_interval_uses_the_widest_order_statistics_at_90_percent(
    n: int, low_index: int, coverage: float | None
) -> None:
    values = list(range(n, 0, -1))  # unsorted on purpose
    low, high, actual = median_ci(values)
    assert (low, high) == (low_index + 1, n - low_index)
    assert actual >= 0.90
    if coverage is not None:
        assert actual == pytest.approx(coverage)


def test_median_interval_of_one_value_is_that_value() -> None:
    assert median_ci([1.3])[:2] == (1.3, 1.3)
    with pytest.raises(ValueError):
        median_ci([])


# --- paired timing ----------------------------------------------------------------------------


@pytest.fixture
def scripted_blocks(monkeypatch: pytest.MonkeyPatch):
    """Sessions that are never opened and blocks whose times come from a script per model."""
    order: list[str] = []
    script: dict[str, list[float]] = {}

    def fake_open(model, _shape, _settings, seed=0):
        return model, {}, 5.0

    def fake_block(session, _feed, iterations, _seconds):
        order.append(session)
        round_index = sum(1 for name in order if name == session) - 1
        times = script[session]
        return np.full(max(iterations, 1), times[round_index % len(times)])

    monkeypatch.setattr(paired_timing, "open_session", fake_open)
    monkeypatch.setattr(paired_timing, "time_block", fake_block)
    monkeypatch.setattr(paired_timing, "timing_threads", lambda _s: 2)
    monkeypatch.setattr(CpuProbe, "stop", lambda self: IDLE)  # no CPU is used: not contention
    return order, script


def test_pairs_alternate_the_order_and_report_the_median_ratio(scripted_blocks) -> None:
    order, script = scripted_blocks
    script.update(teacher=[3.0, 3.0, 3.3, 2.7], student=[2.0])
    timing = measure_paired("teacher", "student", (1, 8, 8), SETTINGS, threshold=1.2)
    assert order[:4] == ["teacher", "student", "student", "teacher"]  # A B, B A, ...
    assert timing.rounds == 8 and timing.ratio == pytest.approx(1.5)
    assert (timing.ci_low, timing.ci_high) == (pytest.approx(1.35), pytest.approx(1.65))
    assert timing.verdict(1.2) == "above" and timing.verdict(1.5) == "inconclusive"
    assert timing.verdict(1.7) == "below"
    assert timing.candidate.at_percentile_ms == 2.0 and timing.reference.rounds == 8


def test_a_ratio_inside_its_noise_gets_more_rounds_then_stays_inconclusive(
    scripted_blocks,
) -> None:
    order, script = scripted_blocks
    script.update(teacher=[3.0, 3.3, 2.7, 3.6, 2.4], student=[2.0])
    timing = measure_paired("teacher", "student", (1, 8, 8), SETTINGS, threshold=1.5)
    assert timing.rounds == paired_timing.MAX_ROUNDS  # 8, then 4 at a time up to 24
    assert len(order) == 2 * paired_timing.MAX_ROUNDS
    assert timing.verdict(1.5) == "inconclusive"
    decided = measure_paired("teacher", "student", (1, 8, 8), SETTINGS, threshold=1.0)
    assert decided.rounds == paired_timing.MIN_ROUNDS  # clear of 1.0 at once: no extra rounds


def test_contention_is_retried_after_a_bounded_back_off(
    scripted_blocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, script = scripted_blocks
    script.update(a=[1.0], b=[1.0])
    uses = iter([BUSY] * 16 + [IDLE] * 16)  # one probe per block, two blocks per round
    monkeypatch.setattr(CpuProbe, "stop", lambda self: next(uses))
    waits: list[float] = []
    monkeypatch.setattr(latency.time, "sleep", waits.append)
    timing = measure_paired("a", "b", (1, 8, 8), SETTINGS, backoff=(2.0, 5.0))
    assert waits == [2.0] and timing.attempts == 2 and not timing.contended

    monkeypatch.setattr(CpuProbe, "stop", lambda self: BUSY)
    waits.clear()
    timing = measure_paired("a", "b", (1, 8, 8), SETTINGS, backoff=(2.0, 5.0))
    assert waits == [2.0, 5.0] and timing.attempts == 3 and timing.contended
    assert timing.to_dict()["cpu"]["contended"] is True


def test_single_timing_backs_off_too(monkeypatch: pytest.MonkeyPatch) -> None:
    model = onnx_bytes(build_model("cifar_resnet8_w8", 10, 1), (1, 8, 8), 18)
    monkeypatch.setattr(CpuProbe, "stop", lambda self: BUSY)
    waits: list[float] = []
    monkeypatch.setattr(latency.time, "sleep", waits.append)
    stats = measure_onnx(model, (1, 8, 8), SETTINGS, backoff=(1.0, 2.0))
    assert waits == [1.0, 2.0] and stats.attempts == 3 and stats.contended


def test_real_sessions_are_paired_and_summarised() -> None:
    """Real onnxruntime sessions: an identical pair and a different pair run and summarise.
    No speed is asserted (the machine is shared); repeatability is benchmarks/repeatability.py."""
    small = onnx_bytes(build_model("cifar_resnet8_w8", 10, 1), (1, 8, 8), 18)
    large = onnx_bytes(build_model("cifar_resnet20_w32", 10, 1), (1, 8, 8), 18)
    timing = measure_paired(large, small, (1, 8, 8), SETTINGS, min_rounds=6, max_rounds=6)
    assert timing.rounds == 6 and timing.cpu.wall_s > 0
    assert timing.ci_low <= timing.ratio <= timing.ci_high
    assert timing.reference.iterations >= 60 and timing.candidate.cold_start_ms > 0


# --- the container's allowance ----------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


def test_cgroup_v2_quota_and_cpuset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_check.os, "sched_getaffinity", lambda _pid: set(range(8)))
    root = _write(tmp_path, {"cpu.max": "150000 100000", "cpuset.cpus.effective": "0-3,8"})
    allowance = cpu_check.cpu_allowance(root)
    assert allowance == CpuAllowance(1.5, 1.5, 5, 8, "quota")
    unlimited = _write(tmp_path / "u", {"cpu.max": "max 100000", "cpuset.cpus.effective": "2-3"})
    assert cpu_check.cpu_allowance(unlimited) == CpuAllowance(2.0, None, 2, 8, "cpuset")


def test_cgroup_v1_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_check.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    root = _write(tmp_path, {"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"})
    assert cpu_check.cgroup_quota(root) == 2.0
    none = _write(tmp_path / "n", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "1"})
    assert cpu_check.cgroup_quota(none) is None
    assert cpu_check.cpu_allowance(tmp_path / "missing") == CpuAllowance(
        4.0, None, None, 4, "affinity"
    )


def test_more_threads_than_the_container_allows_is_one_warning_line() -> None:
    allowance = CpuAllowance(1.5, 1.5, 4, 4, "quota")
    line = cpu_check.thread_warning(4, allowance)
    assert line is not None and "4 intra-op threads" in line and "1.5 CPU(s)" in line
    assert "\n" not in line and "quota" in line
    assert cpu_check.expected_threads(4, allowance) == 1
    assert cpu_check.thread_warning(1, allowance) is None


def test_psi_and_cpu_lists(tmp_path: Path) -> None:
    psi = _write(tmp_path, {"cpu": "some avg10=1.0 avg60=0 avg300=0 total=123456"})
    assert cpu_check.psi_some_total(psi / "cpu") == 123456
    assert cpu_check.psi_some_total(tmp_path / "absent") is None
    assert cpu_check.parse_cpu_list("0-3,8,10-11") == 7


def test_a_sleeping_window_is_contended() -> None:
    """A process that asked for one thread and got no CPU time (it slept) did not run."""
    probe = CpuProbe(1)
    import time

    time.sleep(0.05)
    use = probe.stop()
    assert use.contended and use.cpu_share < 0.5


# --- decisions ----------------------------------------------------------------------------------


def _pair(ratio: float, low: float, high: float, cpu: CpuUse = IDLE) -> PairedTiming:
    return PairedTiming(ratio, low, high, 0.93, 8, flat_stats(3.0), flat_stats(2.0), cpu)


@pytest.mark.usefixtures("named_export")
def test_a_candidate_with_the_teachers_architecture_never_qualifies(tmp_path: Path) -> None:
    """Timing noise can make the teacher's own graph look 1.6x faster than itself; it is still
    not a student."""
    teacher = SMALL[3]
    profile = dataclasses.replace(budget_profile(tmp_path, 100.0), min_speedup=1.5)
    ratios = dict(zip(SMALL, (3.2, 2.1, 1.8, 1.6), strict=True))

    def pair(ref, cand, shape, threshold):
        ratio = ratios[cand.decode()]
        return _pair(ratio, ratio - 0.05, ratio + 0.05)

    selection = sources.choose_student(
        profile, build_model(teacher, 10, 1), teacher, 10, ["cifar_resnet"],
        candidates=SMALL, timer=timer_from({teacher: 3.2}), pair_timer=pair,
    )  # fmt: skip
    same = next(c for c in selection.candidates if c.name == teacher)
    assert same.speedup == 1.6 and same.fits and not same.qualifies
    assert same.speed_verdict == select.SAME_AS_TEACHER
    assert selection.chosen == SMALL[2]  # 1.8x, the largest that qualifies


@pytest.mark.usefixtures("named_export")
def test_selection_on_a_contended_host_stops_with_exit_code_3(tmp_path: Path) -> None:
    profile = dataclasses.replace(budget_profile(tmp_path, 100.0), min_speedup=1.5)

    def pair(ref, cand, shape, threshold):
        return _pair(2.0, 1.9, 2.1, BUSY)

    with pytest.raises(LatencyInconclusive, match="contended while timing cifar_resnet8_w8"):
        sources.choose_student(
            profile, build_model(SMALL[3], 10, 1), SMALL[3], 10, ["cifar_resnet"],
            candidates=SMALL, timer=timer_from({SMALL[3]: 4.0}), pair_timer=pair,
        )  # fmt: skip


@pytest.mark.usefixtures("named_export")
def test_speedup_inside_noise_is_inconclusive_not_fail_or_pass(tmp_path: Path) -> None:
    profile = dataclasses.replace(budget_profile(tmp_path, 100.0), min_speedup=1.5)
    ratios = {SMALL[0]: (2.5, 2.3, 2.7), SMALL[1]: (1.6, 1.4, 1.8), SMALL[2]: (1.2, 1.1, 1.3)}

    def pair(ref, cand, shape, threshold):
        return _pair(*ratios.get(cand.decode(), (1.0, 0.9, 1.1)))

    selection = sources.choose_student(
        profile, build_model(SMALL[3], 10, 1), SMALL[3], 10, ["cifar_resnet"],
        candidates=SMALL, timer=timer_from({SMALL[3]: 4.0}), pair_timer=pair,
    )  # fmt: skip
    verdicts = {c.name: c.speed_verdict for c in selection.candidates}
    assert verdicts[SMALL[0]] == "above" and verdicts[SMALL[1]] == "inconclusive"
    assert verdicts[SMALL[2]] == "below" and selection.chosen == SMALL[0]
    assert selection.candidates[1].speedup_ci == [1.4, 1.8]


def _speedup(ratio: float, low: float, high: float, contended: bool = False) -> dict:
    above = "above" if low >= 1 else "below" if high < 1 else "inconclusive"
    return {"measured": True, "speedup": ratio, "ci_low": low, "ci_high": high,
            "verdict": above, "contended": contended}  # fmt: skip


def test_faster_than_teacher_gate_follows_the_interval() -> None:
    [ok] = speedup_gates(_speedup(1.4, 1.3, 1.5))
    [slow] = speedup_gates(_speedup(0.8, 0.7, 0.9))
    [noise] = speedup_gates(_speedup(1.02, 0.95, 1.08))
    [busy] = speedup_gates(_speedup(0.9, 0.8, 0.95, contended=True))
    assert ok["passed"] and not slow["passed"] and not slow.get("inconclusive")
    assert noise["inconclusive"] and busy["inconclusive"] and "contended" in busy["detail"]
    assert verdict([ok]) == (True, 0, [])
    assert verdict([ok, noise]) == (False, 3, [])
    assert verdict([slow, noise]) == (False, 1, ["faster_than_teacher"])


def test_latency_gate_under_contention_never_fails_falsely() -> None:
    busy = {"contended": True, "repeats": [{"cpu": BUSY.to_dict(), "attempts": 3}]}
    idle = {"contended": False, "repeats": [{"cpu": IDLE.to_dict(), "attempts": 1}]}
    miss = latency_gate("latency_p90", 7.9, 5.0, busy)
    assert miss.inconclusive and not miss.passed and "INCONCLUSIVE" in miss.detail
    hit = latency_gate("latency_p90", 3.2, 5.0, busy)
    assert hit.passed and not hit.inconclusive and "contended" in hit.detail
    real_miss = latency_gate("latency_p90", 7.9, 5.0, idle)
    assert not real_miss.passed and not real_miss.inconclusive


def test_int8_is_kept_only_when_faster_beyond_noise() -> None:
    from compressor.export.int8 import decide_int8
    from compressor.export.verify import VerifyReport

    def report(top1: float) -> VerifyReport:
        return VerifyReport(1000, top1, None, 0.9, 0.9 - top1, None, flat_stats(2.0))

    fp32, int8 = report(0.89), report(0.885)
    assert decide_int8(fp32, int8, 0.03, paired=_pair(1.5, 1.4, 1.6)).use_int8
    noisy = decide_int8(fp32, int8, 0.03, paired=_pair(1.05, 0.95, 1.15))
    assert not noisy.use_int8 and "beyond noise" in noisy.reason and not noisy.inconclusive
    busy = decide_int8(fp32, int8, 0.03, paired=_pair(1.5, 1.4, 1.6, BUSY))
    assert not busy.use_int8 and busy.inconclusive and "contended" in busy.reason


def test_the_contention_threshold_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    from compressor.errors import CompressorError
    from compressor.latency.cpu import MIN_CPU_SHARE_ENV

    assert BUSY.contended and not IDLE.contended  # the default 0.85
    monkeypatch.setenv(MIN_CPU_SHARE_ENV, "0")
    assert not BUSY.contended  # the test suite's setting: never contended
    monkeypatch.setenv(MIN_CPU_SHARE_ENV, "0.995")
    assert IDLE.contended
    monkeypatch.setenv(MIN_CPU_SHARE_ENV, "lots")
    with pytest.raises(CompressorError, match="COMPRESSOR_MIN_CPU_SHARE='lots' is not a fraction"):
        _ = BUSY.contended
