"""The teacher-speedup, int8-aware and calibrated branches of selection, on constructed timings.

The stand-ins of ``tests/selection/test_select.py`` are used here too: the exporter hands the
timer the
architecture's name (the teacher's as well) instead of ONNX bytes, and the timer returns a
constructed latency for that name. So no graph is exported and no clock is read: what is judged
is :mod:`compressor.selection.choose`'s own arithmetic (speedup, rounding, boundaries), its walk
and the
messages it raises. These tests are in mutmut's selection (``pyproject.toml``); the real-export
versions of some of them are in ``tests/selection/test_teacher_speedup.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from compressor.errors import CompressorError
from compressor.latency.cpu import CpuUse
from compressor.latency.paired import PairedTiming
from compressor.latency.profiles import Calibration
from compressor.latency.timing import LatencyStats, TimingSettings
from compressor.models.registry import build_model, count_params
from compressor.selection import choose as select
from compressor.selection import timers
from compressor.selection.choose import select_student, time_teacher
from compressor.selection.sources import choose_student
from compressor.selection.table import Candidate, Selection, TeacherTiming, nothing_qualifies
from compressor.selection.target_calibration import LatencyPredictor
from compressor.selection.timers import profile_timer
from tests.fakes import SMALL, budget_profile, flat_stats, timer_from

pytestmark = pytest.mark.usefixtures("named_export")

TEACHER = "cifar_resnet20_w32"  # in the cifar_resnet ladder, so the stand-in exporter names it
TEACHER_PARAMS, TEACHER_MFLOPS = 1_084_010, 20.225  # 20.224512 MFLOPs at 1x8x8, to 3 decimals


def _speed_profile(tmp_path: Path, budget: float = 100.0, min_speedup: float = 1.5, **kw):
    return dataclasses.replace(budget_profile(tmp_path, budget, **kw), min_speedup=min_speedup)


def _teacher(ms: float | None) -> TeacherTiming:
    return TeacherTiming(TEACHER, TEACHER_PARAMS, TEACHER_MFLOPS, ms)


def _select(profile, latency: dict[str, float], teacher: TeacherTiming | None, **kw) -> Selection:
    kw.setdefault("candidates", SMALL)
    return select_student(
        profile, 10, "cifar_resnet", timer=timer_from(latency), teacher=teacher, **kw
    )


# --- time_teacher ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "rounded", "meets"),
    [(5.0, 5.0, True), (5.00004, 5.0, False), (4.99996, 5.0, True), (4.56789, 4.5679, True)],
)
def test_time_teacher_times_the_teacher_like_a_candidate(
    tmp_path: Path, at: float, rounded: float, meets: bool
) -> None:
    """Rounded like a candidate's row; the budget verdict is on the unrounded value, at the
    budget itself (not the target: 5.0 is above this profile's 4.5 ms target)."""
    seen: list[tuple[bytes, tuple[int, int, int]]] = []

    def timer(graph: bytes, shape: tuple[int, int, int]) -> LatencyStats:
        seen.append((graph, shape))
        return flat_stats(at, p50=4.123456, p90=5.654321)

    model = build_model(TEACHER, 10, 1)
    timing = time_teacher(model, "my teacher", budget_profile(tmp_path, 5.0), timer)
    assert seen == [(TEACHER.encode(), (1, 8, 8))]  # exported at the profile's shape and opset
    assert timing == TeacherTiming(
        "my teacher", TEACHER_PARAMS, TEACHER_MFLOPS, rounded, 4.1235, 5.6543, meets, ""
    )


@pytest.mark.parametrize("failing", ["export", "timer"])
def test_teacher_that_cannot_be_exported_or_timed_is_returned_untimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    def refuse(*_args: object) -> bytes:
        raise CompressorError("aten::weird has no ONNX symbolic")

    if failing == "export":
        monkeypatch.setattr(select, "onnx_bytes", refuse)
    timer = refuse if failing == "timer" else timer_from({})
    model = build_model(TEACHER, 10, 1)
    timing = time_teacher(model, "ts teacher", budget_profile(tmp_path, 5.0), timer)
    assert timing == TeacherTiming(
        "ts teacher", TEACHER_PARAMS, TEACHER_MFLOPS, None, None, None, None,
        "not timed: aten::weird has no ONNX symbolic",
    )  # fmt: skip


def test_default_timer_is_onnxruntime_under_the_profile_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a timer, the teacher (and every candidate) goes to ``measure_onnx`` with the
    profile's timing settings and percentile."""
    profile = dataclasses.replace(budget_profile(tmp_path, 5.0), percentile=75.0, min_iterations=7)
    calls: list[tuple[bytes, tuple[int, int, int], TimingSettings, float]] = []

    def fake_measure(model, shape, settings, percentile):
        calls.append((model, shape, settings, percentile))
        return flat_stats({TEACHER: 6.0}.get(model.decode(), 1.0))

    monkeypatch.setattr(timers, "measure_onnx", fake_measure)
    settings = TimingSettings.from_profile(profile)
    assert settings.min_iterations == 7
    assert profile_timer(profile)(b"graph", (1, 8, 8)).at_percentile_ms == 1.0
    assert calls == [(b"graph", (1, 8, 8), settings, 75.0)]

    teacher = time_teacher(build_model(TEACHER, 10, 1), TEACHER, profile)
    assert teacher.at_percentile_ms == 6.0 and teacher.meets_budget is False
    calls.clear()
    pairs: list[tuple[bytes, bytes, TimingSettings, float, float | None]] = []

    def fake_paired(ref, cand, shape, settings, percentile, threshold=None):
        pairs.append((ref, cand, settings, percentile, threshold))
        ref_stats, cand_stats = fake_measure(ref, shape, settings, percentile), flat_stats(1.0)
        calls.pop()  # counted in pairs
        return PairedTiming(6.0, 5.5, 6.5, 0.93, 8, ref_stats, cand_stats, CpuUse(1.0, 0.0, 1, 1.0))

    monkeypatch.setattr(timers, "measure_paired", fake_paired)
    selection = choose_student(profile, build_model(TEACHER, 10, 1), TEACHER, 10,
                               ["cifar_resnet"], candidates=SMALL[:2])  # fmt: skip
    assert [c[0].decode() for c in calls] == [TEACHER]  # the teacher's own row, timed once
    assert all(c[1:] == ((1, 8, 8), settings, 75.0) for c in calls)
    assert [(r.decode(), c.decode()) for r, c, *_ in pairs] == [(TEACHER, n) for n in SMALL[:2]]
    assert all(p[2:] == (settings, 75.0, profile.min_speedup) for p in pairs)
    assert selection.chosen == SMALL[1] and selection.teacher == teacher
    assert selection.candidates[1].speedup_ci == [5.5, 6.5]
    calls.clear()
    alone = select_student(profile, 10, "cifar_resnet", candidates=SMALL[:2])
    assert [c[0].decode() for c in calls] == list(SMALL[:2])
    assert all(c[1:] == ((1, 8, 8), settings, 75.0) for c in calls)
    assert alone.chosen == SMALL[1] and alone.teacher is None


def test_unknown_candidates_are_named_with_the_family_ladder(tmp_path: Path) -> None:
    asked = ("cifar_resnet8_w8", "resnet18", "cifar_resnet8_w16", "tiny")
    with pytest.raises(CompressorError) as caught:
        _select(budget_profile(tmp_path, 5.0), {}, None, candidates=asked)
    assert str(caught.value).startswith(
        "candidate(s) resnet18, tiny not in family cifar_resnet: cifar_resnet8_w8, "
        "cifar_resnet8_w16, cifar_resnet14_w16,"
    )


def test_mflops_are_the_flop_count_in_millions_to_three_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Giga-FLOP models (the 224-px ladder) keep their MFLOPs exact to the third decimal."""
    monkeypatch.setattr(
        select, "count_flops", lambda model, shape: 4_000_000_000 + count_params(model)
    )
    latency = dict(zip(SMALL[:2], (1.0, 2.0), strict=True))
    selection = _select(budget_profile(tmp_path, 5.0), latency, None, candidates=SMALL[:2])
    assert [c.mflops for c in selection.candidates] == [4000.02, 4000.078]  # 19,810 / 77,754


# --- the speedup rule in select_student ----------------------------------------------------------


def test_speedup_is_teacher_over_candidate_and_the_boundary_is_faster(tmp_path: Path) -> None:
    # teacher 9 ms, min_speedup 1.5: without a margin 6.0 ms is exactly 1.5x (faster), 6.3 ms
    # is 1.43x (not); with the default 10% margin the bar is 1.5 / 0.9 = 1.667x, which 5.3 ms
    # (1.698x) clears and 5.6 ms (1.607x, above 1.5x) does not
    latency = dict(zip(SMALL, (1.0, 7.0 / 3, 6.0, 6.3), strict=True))
    selection = _select(_speed_profile(tmp_path, margin=0.0), latency, _teacher(9.0))
    rows = selection.candidates
    assert [c.speedup for c in rows] == [9.0, 3.857, 1.5, 1.429]  # rounded to 3 decimals
    assert [c.faster for c in rows] == [True, True, True, False]
    assert [c.fits for c in rows] == [True, True, True, True]
    assert [c.qualifies for c in rows] == [True, True, True, False]
    assert selection.chosen == SMALL[2]  # the largest that fits *and* is fast enough
    assert selection.min_speedup == 1.5 and selection.teacher == _teacher(9.0)
    assert selection.to_dict()["candidates"][3]["qualifies"] is False

    latency = dict(zip(SMALL, (1.0, 7.0 / 3, 5.3, 5.6), strict=True))
    selection = _select(_speed_profile(tmp_path), latency, _teacher(9.0))
    assert [c.faster for c in selection.candidates] == [True, True, True, False]
    assert selection.chosen == SMALL[2] and selection.target_speedup == 1.6667


def test_speedup_is_judged_on_the_unrounded_latency(tmp_path: Path) -> None:
    # 6.00004 ms rounds to 6.0 in the table, but 1.5 * 6.00004 > 9: not faster
    latency = dict(zip(SMALL[:3], (1.0, 2.0, 6.00004), strict=True))
    profile = _speed_profile(tmp_path, margin=0.0)
    selection = _select(profile, latency, _teacher(9.0), candidates=SMALL[:3])
    last = selection.candidates[-1]
    assert last.at_percentile_ms == 6.0 and last.speedup == 1.5 and last.faster is False
    assert selection.chosen == SMALL[1]


def test_a_zero_latency_candidate_gets_a_finite_speedup(tmp_path: Path) -> None:
    latency = dict(zip(SMALL[:2], (0.0, 2.0), strict=True))
    selection = _select(_speed_profile(tmp_path), latency, _teacher(9.0), candidates=SMALL[:2])
    assert selection.candidates[0].speedup == 9e9  # 9 ms / 1e-9 ms, not a division by zero
    assert selection.candidates[0].faster and selection.candidates[1].speedup == 4.5


def test_a_fitting_candidate_that_is_not_faster_counts_as_a_miss(tmp_path: Path) -> None:
    latency = dict(zip(SMALL, (1.0, 7.0, 2.0, 3.0), strict=True))
    calls: list[str] = []
    selection = select_student(
        _speed_profile(tmp_path), 10, "cifar_resnet", timer=timer_from(latency, calls),
        candidates=SMALL, teacher=_teacher(9.0), patience=1,
    )  # fmt: skip
    assert calls == list(SMALL[:2])  # 7 ms fits the 90 ms target but is only 1.29x faster
    assert selection.chosen == SMALL[0]
    assert [c.fits for c in selection.candidates] == [True, True, None, None]


@pytest.mark.parametrize("teacher", [None, TeacherTiming("ts", 1, 1.0, None, note="not timed")])
def test_without_a_timed_teacher_the_budget_alone_decides(
    tmp_path: Path, teacher: TeacherTiming | None
) -> None:
    latency = dict(zip(SMALL, (1.0, 2.0, 3.0, 4.0), strict=True))
    selection = _select(_speed_profile(tmp_path, min_speedup=100.0), latency, teacher)
    assert selection.chosen == SMALL[-1] and selection.teacher == teacher
    assert all(c.speedup is None and c.faster is None for c in selection.candidates)
    assert all(c.qualifies for c in selection.candidates)


# --- int8 profiles: judged at the shipped precision ---------------------------------------------


def test_int8_candidates_are_judged_on_the_shipped_graph(tmp_path: Path) -> None:
    fp32 = dict(zip(SMALL, (2.123456, 5.0, 7.0, 9.0), strict=True))
    int8 = dict(zip(SMALL, (1.0, 2.0, 4.0, 5.123456), strict=True))
    calls: list[tuple[str, tuple[int, int, int]]] = []

    def timer(graph: bytes, shape: tuple[int, int, int]) -> LatencyStats:
        calls.append((graph.decode(), shape))
        if graph.startswith(b"int8:"):
            ms = int8[graph[5:].decode()]
            return flat_stats(ms, p50=ms / 2, p90=ms + 0.5)
        return flat_stats(fp32[graph.decode()])

    shipped: list[bytes] = []

    def to_shipped(graph: bytes) -> bytes:
        shipped.append(graph)
        return b"int8:" + graph

    profile = _speed_profile(tmp_path, budget=5.0, min_speedup=2.0)  # 4.5 ms, 2.22x
    selection = select_student(profile, 10, "cifar_resnet", timer=timer, candidates=SMALL,
                               teacher=_teacher(9.0), to_shipped=to_shipped)  # fmt: skip
    assert shipped == [n.encode() for n in SMALL]
    assert calls == [c for n in SMALL for c in ((n, (1, 8, 8)), ("int8:" + n, (1, 8, 8)))]
    rows = selection.candidates
    assert [c.fp32_at_percentile_ms for c in rows] == [2.1235, 5.0, 7.0, 9.0]
    assert [c.at_percentile_ms for c in rows] == [1.0, 2.0, 4.0, 5.1235]
    assert [(c.p50_ms, c.p90_ms) for c in rows] == [  # the shipped graph's, 4 places
        (0.5, 1.5), (1.0, 2.5), (2.0, 4.5), (2.5617, 5.6235),
    ]  # fmt: skip
    assert [c.fits for c in rows] == [True, True, True, False]  # fp32 would fit only the first
    assert [c.speedup for c in rows] == [9.0, 4.5, 2.25, 1.757]  # against the int8 latency
    assert [c.faster for c in rows] == [True, True, True, False]
    assert {c.precision for c in rows} == {"int8"} and selection.precision == "int8"
    assert selection.chosen == SMALL[2]


def test_fp32_profiles_time_each_candidate_once(tmp_path: Path) -> None:
    calls: list[str] = []
    latency = dict(zip(SMALL, (1.0, 2.0, 3.0, 4.0), strict=True))
    selection = select_student(_speed_profile(tmp_path), 10, "cifar_resnet",
                               timer=timer_from(latency, calls), candidates=SMALL)  # fmt: skip
    assert calls == list(SMALL) and selection.precision == "fp32"
    assert all(
        c.precision == "fp32" and c.fp32_at_percentile_ms is None for c in selection.candidates
    )


# --- calibrated profiles: judged on the predicted target latency --------------------------------

CALIBRATION = Calibration("board", "2026-01-01T00:00:00+00:00", 1, ("a",), (1.0,), (2.0,))
# ratio target/host: 2 at the smallest candidate's MFLOPs, 4 from the second one's up
PREDICTOR = LatencyPredictor((0.387, 1.527), (2.0, 4.0))


@pytest.fixture
def calibrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A calibrated profile whose host->target predictor is constructed (the suite is not
    timed); the fake records what select_student hands it."""
    seen: list[tuple[object, ...]] = []

    def fake_host_predictor(calibration, shape, timer):
        seen.append((calibration, shape, timer))
        return PREDICTOR

    monkeypatch.setattr(select, "host_predictor", fake_host_predictor)
    profile = dataclasses.replace(budget_profile(tmp_path, 5.0), calibration=CALIBRATION)
    return profile, seen


def test_calibrated_selection_judges_the_prediction(calibrated) -> None:
    profile, seen = calibrated  # target 4.5 ms on the board
    latency = dict(zip(SMALL, (1.23456, 1.125, 1.2, 0.5), strict=True))
    timer = timer_from(latency)
    selection = select_student(profile, 10, "cifar_resnet", timer=timer, candidates=SMALL)
    assert seen == [(CALIBRATION, (1, 8, 8), timer)]
    rows = selection.candidates
    assert [c.at_percentile_ms for c in rows] == [1.2346, 1.125, 1.2, 0.5]  # host, as timed
    assert [c.predicted_ms for c in rows] == [2.4691, 4.5, 4.8, 2.0]  # host x ratio, 4 places
    assert [c.fits for c in rows] == [True, True, False, True]  # 4.5 is exactly the target
    assert selection.chosen == SMALL[3]
    assert selection.calibrated_for == "board" and selection.predictor == PREDICTOR
    assert selection.predict(1.0, 0.387) == 2.0 and selection.predict(1.0, 100.0) == 4.0


def test_uncalibrated_selection_predicts_nothing(tmp_path: Path) -> None:
    selection = _select(budget_profile(tmp_path, 5.0), dict.fromkeys(SMALL, 1.0), None)
    assert selection.predict(1.0, 1.0) is None and selection.predictor is None
    assert all(c.predicted_ms is None for c in selection.candidates)


def test_calibrated_budget_failure_names_the_prediction(calibrated) -> None:
    profile, _ = calibrated
    latency = dict(zip(SMALL, (2.5, 1.25, 2.0, 2.0), strict=True))  # predicted 5.0, 5.0, 8, 8
    with pytest.raises(CompressorError) as caught:
        select_student(profile, 10, "cifar_resnet", timer=timer_from(latency), candidates=SMALL)
    assert str(caught.value) == (
        "no student fits the budget: the fastest candidate cifar_resnet8_w16 takes 5.000 ms "
        "(predicted on the target) at p90, the budget is 5 ms (4.500 ms after the 10% safety "
        "margin)"
    )


# --- why nothing qualified ---------------------------------------------------------------------


def test_no_candidate_fast_enough_names_the_teacher_and_the_fastest(tmp_path: Path) -> None:
    # the first fits the budget but is only 1.25x faster; the second misses the budget
    latency = dict(zip(SMALL, (2.0, 120.0, 1.0, 1.0), strict=True))
    with pytest.raises(CompressorError) as caught:
        _select(_speed_profile(tmp_path), latency, _teacher(2.5))
    assert str(caught.value) == (
        "no student is 1.5x faster than the teacher: the teacher cifar_resnet20_w32 takes "
        "2.500 ms at p90 under the profile's settings, the fastest candidate cifar_resnet8_w8 "
        "2.000 ms (1.25x); lower budget.min_speedup in the profile or choose another --family "
        "/ --candidates"
    )


@pytest.mark.parametrize("teacher_ms", [1.0, None])
def test_budget_failure_is_reported_as_budget_whatever_the_teacher(
    tmp_path: Path, teacher_ms: float | None
) -> None:
    latency = dict(zip(SMALL, (6.0, 7.0, 1.0, 1.0), strict=True))
    with pytest.raises(CompressorError) as caught:
        _select(_speed_profile(tmp_path, budget=5.0), latency, _teacher(teacher_ms))
    assert str(caught.value) == (
        "no student fits the budget: the fastest candidate cifar_resnet8_w8 takes 6.000 ms at "
        "p90, the budget is 5 ms (4.500 ms after the 10% safety margin)"
    )


def test_nothing_qualifies_picks_the_fastest_timed_row(tmp_path: Path) -> None:
    table = [
        Candidate("untimed", 1, 0.1),
        Candidate("slow", 1, 0.2, at_percentile_ms=3.0, fits=True, speedup=1.0, faster=False),
        Candidate("fast", 1, 0.3, at_percentile_ms=2.0, fits=True, speedup=1.5, faster=False),
        Candidate("missed", 1, 0.4, at_percentile_ms=9.0, fits=False, speedup=0.3, faster=False),
    ]
    profile = _speed_profile(tmp_path, budget=5.0, min_speedup=2.0)
    message = nothing_qualifies(table, profile, _teacher(3.0), predicted=False)
    assert message.startswith("no student is 2x faster than the teacher: the teacher ")
    assert "the fastest candidate fast 2.000 ms (1.50x);" in message
    budget = nothing_qualifies(table[:1] + table[3:], profile, _teacher(3.0), predicted=False)
    assert budget.startswith("no student fits the budget: the fastest candidate missed takes 9.000")


# --- choose_student ----------------------------------------------------------------------------


def _choose(profile, latency: dict[str, float], families=("cifar_resnet",), **kw):
    lines: list[str] = []
    model = build_model(TEACHER, 10, 1)
    kw.setdefault("timer", timer_from(latency))
    selection = choose_student(profile, model, TEACHER, 10, list(families), candidates=SMALL,
                               log=lines.append, **kw)  # fmt: skip
    return selection, lines


def test_choose_student_times_the_teacher_first_and_says_it_already_fits(tmp_path: Path) -> None:
    latency = {TEACHER: 4.0, **dict(zip(SMALL, (1.0, 2.0, 2.3, 3.0), strict=True))}
    seen: list[str] = []
    calls: list[str] = []
    selection, lines = _choose(
        _speed_profile(tmp_path, budget=5.0),
        latency,
        timer=timer_from(latency, calls),
        on_candidate=lambda c: seen.append(c.name),
    )
    paired = [name for cand in SMALL for name in (TEACHER, cand)]  # each speedup is a pair
    assert calls == [TEACHER, *paired] and seen == list(SMALL)
    assert lines == [
        "teacher cifar_resnet20_w32: 4.000 ms at p90 (fp32)",
        "the teacher already meets the 5 ms budget: compressing to the largest candidate at "
        "least 1.5x faster than it (median at least 1.67x, the safety margin)",
    ]
    assert selection.teacher == TeacherTiming(TEACHER, TEACHER_PARAMS, TEACHER_MFLOPS, 4.0, 4.0,
                                              4.0, True)  # fmt: skip
    assert selection.chosen == SMALL[2]  # 4.0 / 2.3 = 1.74x; 4.0 / 3.0 = 1.33x
    assert [c.name for c in selection.candidates] == list(SMALL)


def test_choose_student_over_budget_teacher_and_int8(tmp_path: Path) -> None:
    latency = {TEACHER: 50.0, **dict(zip(SMALL, (1.0, 2.0, 3.0, 4.0), strict=True))}
    latency |= {"int8:" + n: ms / 2 for n, ms in latency.items()}
    selection, lines = _choose(_speed_profile(tmp_path, budget=2.0), latency,
                               to_shipped=lambda g: b"int8:" + g)  # fmt: skip
    assert lines == ["teacher cifar_resnet20_w32: 50.000 ms at p90 (fp32)"]  # no 'already'
    assert selection.teacher is not None and selection.teacher.meets_budget is False
    assert selection.precision == "int8" and selection.chosen == SMALL[2]  # 1.5 ms <= 1.8


def test_choose_student_untimed_teacher_warns_and_skips_the_speedup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in = select.onnx_bytes

    def export(model, shape, opset):
        if count_params(model) == TEACHER_PARAMS:
            raise CompressorError("cannot export the teacher")
        return stand_in(model, shape, opset)

    monkeypatch.setattr(select, "onnx_bytes", export)
    latency = dict(zip(SMALL, (1.0, 2.0, 3.0, 4.0), strict=True))
    selection, lines = _choose(_speed_profile(tmp_path, min_speedup=50.0), latency)
    assert lines == [
        "warning: teacher not timed: cannot export the teacher; the speedup criterion is not "
        "applied"
    ]
    assert selection.teacher is not None and selection.teacher.at_percentile_ms is None
    assert selection.chosen == SMALL[-1]


def _attempts_timer(per_attempt: list[dict[str, float]]):
    """A timer whose latencies change with each attempt (the teacher is timed once, first)."""
    state = {"attempt": -1}

    def timer(graph: bytes, shape: tuple[int, int, int]) -> LatencyStats:
        name = graph.decode()
        if name == TEACHER:
            return flat_stats(100.0)
        if name == SMALL[0]:
            state["attempt"] += 1
        return flat_stats(per_attempt[state["attempt"]][name])

    return timer


def test_choose_student_falls_back_to_the_next_family(tmp_path: Path) -> None:
    slow, fast = dict.fromkeys(SMALL, 60.0), dict.fromkeys(SMALL, 1.0)
    profile = _speed_profile(tmp_path, budget=50.0)
    selection, lines = _choose(
        profile, {}, families=("cifar_resnet", "cifar_resnet"), timer=_attempts_timer([slow, fast])
    )
    assert selection.chosen == SMALL[-1]  # the second attempt
    assert lines[1:] == [
        "family cifar_resnet: no student fits the budget: the fastest candidate cifar_resnet8_w8 "
        "takes 60.000 ms at p90, the budget is 50 ms (45.000 ms after the 10% safety margin); "
        "trying cifar_resnet"
    ]


def test_choose_student_raises_the_last_familys_failure(tmp_path: Path) -> None:
    first, last = dict.fromkeys(SMALL, 60.0), dict.fromkeys(SMALL, 70.0)
    with pytest.raises(CompressorError, match=r"takes 70\.000 ms") as caught:
        _choose(
            _speed_profile(tmp_path, budget=50.0),
            {},
            families=("cifar_resnet", "cifar_resnet"),
            timer=_attempts_timer([first, last]),
        )
    assert "trying" not in str(caught.value)


# --- the table without a teacher or a calibration -----------------------------------------------


def test_format_table_host_only_without_teacher() -> None:
    from compressor.selection.table import format_table

    rows = [
        Candidate("cifar_resnet8_w8", 19810, 0.387, 1.0, 1.5, 1.25, None, True),
        Candidate("cifar_resnet8_w16", 77754, 1.527, 2.0, 2.5, 2.25, None, False),
        Candidate("cifar_resnet14_w16", 174970, 3.297),
    ]
    selection = Selection("cifar_resnet", "cifar_resnet8_w8", 5.0, 4.5, 90.0, rows)
    assert format_table(selection).splitlines() == [  # a 24-character name column
        "candidate                   params    MFLOPs    p50 ms    p90 ms  speedup  fits  qualifies",  # noqa: E501
        "cifar_resnet8_w8            19,810       0.4     1.000     1.500        -  yes   yes  <- chosen",  # noqa: E501
        "cifar_resnet8_w16           77,754       1.5     2.000     2.500        -  no    no",
        "cifar_resnet14_w16         174,970       3.3         -         -        -  -     -",
    ]
    rows[2].name = "a_student_with_a_long_name_x"  # 28 characters: the column grows to 29
    head, *_, last = format_table(selection).splitlines()
    assert head.index("params") == 29 + 10 - len("params")
    assert (
        last
        == "a_student_with_a_long_name_x    174,970       3.3         -         -        -  -     -"
    )
