from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compressor.errors import CompressorError
from compressor.export import to_onnx as export
from compressor.latency.profiles import load_profile
from compressor.latency.timing import LatencyStats, TimingSettings, measure_onnx, summarize
from compressor.models.registry import build_model, get_family
from compressor.selection.choose import select_student
from tests.conftest import write_profile
from tests.fakes import SMALL, budget_profile, flat_stats, timer_from


def _stub_timer(latency_by_mflops: dict[float, float], calls: list[int]):
    """A timer whose latency grows with the candidate's size (its serialized length)."""

    def timer(model: bytes, shape: tuple[int, int, int]) -> LatencyStats:
        calls.append(len(model))
        ms = len(model) / 100_000.0  # monotone in parameter count
        return summarize(np.full(20, ms), 90.0, 1.0, TimingSettings())

    return timer


def test_largest_fitting_candidate_is_chosen(tmp_path: Path) -> None:
    calls: list[int] = []
    # serialized sizes of the first candidates, to put the budget between two of them; the
    # ladder is built as select_student builds it (same seed, same order), so selection's
    # exports of these two are the same graphs and are not exported twice (tests/conftest.py)
    torch.manual_seed(0)
    ladder = {n: build_model(n, 10, 1) for n in get_family("cifar_resnet").ladder}
    sizes = [len(export.onnx_bytes(ladder[n], (1, 8, 8), 18)) / 100_000 for n in
             ("cifar_resnet8_w16", "cifar_resnet14_w16")]  # fmt: skip
    budget = (sizes[0] + sizes[1]) / 2 / 0.9  # target = budget * (1 - 0.1) lies between them
    profile = load_profile(str(write_profile(tmp_path / "p.toml", **{"budget.latency_ms": budget})))
    torch.manual_seed(0)
    selection = select_student(profile, 10, "cifar_resnet", timer=_stub_timer({}, calls))
    assert selection.chosen == "cifar_resnet8_w16"
    fits = {c.name: c.fits for c in selection.candidates}
    assert fits["cifar_resnet8_w8"] and not fits["cifar_resnet14_w16"]
    # the ordered walk stops after two misses: the expensive end is never exported
    assert fits["cifar_resnet20_w64"] is None
    assert len(calls) == 4


def test_no_candidate_fits_names_fastest_and_budget(tmp_path: Path) -> None:
    profile = load_profile(str(write_profile(tmp_path / "p.toml", **{"budget.latency_ms": 1e-5})))
    with pytest.raises(CompressorError, match=r"fastest candidate cifar_resnet8_w8 takes .* ms"):
        select_student(profile, 10, "cifar_resnet", timer=_stub_timer({}, []))


def test_candidate_subset_and_unknown_candidate(tmp_path: Path) -> None:
    profile = load_profile(str(write_profile(tmp_path / "p.toml")))
    subset = ("cifar_resnet8_w8", "cifar_resnet14_w16")
    selection = select_student(
        profile, 10, "cifar_resnet", timer=_stub_timer({}, []), candidates=subset
    )
    assert [c.name for c in selection.candidates] == list(subset)
    with pytest.raises(CompressorError, match="not in family"):
        select_student(profile, 10, "cifar_resnet", candidates=("resnet18",))


def test_real_timer_selection(tmp_path: Path) -> None:
    """Real onnxruntime timing: with a generous budget the larger of two candidates is chosen."""
    profile = load_profile(str(write_profile(tmp_path / "p.toml", **{"budget.latency_ms": 50.0})))
    selection = select_student(
        profile, 10, "cifar_resnet", candidates=("cifar_resnet8_w8", "cifar_resnet8_w16")
    )
    assert selection.chosen == "cifar_resnet8_w16"
    for cand in selection.candidates:
        assert cand.fits and 0 < cand.p50_ms <= cand.p90_ms


def test_measure_onnx_iterations_and_percentiles(tmp_path: Path) -> None:
    model = export.onnx_bytes(build_model("cifar_resnet8_w8", 10, 1), (1, 8, 8), 18)
    settings = TimingSettings(batch_size=3, warmup_runs=1, min_iterations=25, min_seconds=0.0)
    stats = measure_onnx(model, (1, 8, 8), settings, percentile=75)
    assert stats.rounds == 5 and stats.iterations == 50  # 5 rounds of at least 10 runs
    assert stats.batch_size == 3 and stats.cpu is not None and stats.attempts == 1
    assert stats.min_ms <= stats.p50_ms <= stats.at_percentile_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.cold_start_ms > 0


# --- the selection decision, on constructed timings ------------------------------------------
# Exporting a candidate takes about 2 s and counting its FLOPs about 0.3 s, so these tests hand
# the timer a small stand-in for the ONNX bytes that names the architecture, and count each
# architecture's FLOPs once. What is judged (fit, walk, choice) is select_student's own code.


def test_candidate_exactly_at_the_target_fits(tmp_path: Path, named_export) -> None:
    profile = budget_profile(tmp_path, 5.0)
    target = profile.target_ms
    latency = dict(zip(SMALL, (target / 2, target, target * 1.01, target * 2), strict=True))
    selection = select_student(
        profile, 10, "cifar_resnet", timer=timer_from(latency), candidates=SMALL
    )
    assert selection.chosen == "cifar_resnet8_w16"
    fits = [c.fits for c in selection.candidates]
    assert fits == [True, True, False, False]


def test_safety_margin_is_applied_before_judging(tmp_path: Path, named_export) -> None:
    """A candidate between the target (budget less margin) and the budget does not fit."""
    profile = budget_profile(tmp_path, 10.0, margin=0.2)
    assert profile.target_ms == pytest.approx(8.0)
    latency = dict(zip(SMALL, (2.0, 7.9, 9.0, 9.5), strict=True))
    selection = select_student(
        profile, 10, "cifar_resnet", timer=timer_from(latency), candidates=SMALL
    )
    assert selection.chosen == "cifar_resnet8_w16"
    assert [c.fits for c in selection.candidates] == [True, True, False, False]
    assert (selection.budget_ms, selection.percentile) == (10.0, 90.0)
    assert selection.target_ms == pytest.approx(8.0)
    assert selection.calibrated_for is None and selection.predictor is None


def test_walk_resets_misses_and_chooses_largest_fitting(tmp_path: Path, named_export) -> None:
    ladder = (*SMALL, "cifar_resnet32_w16", "cifar_resnet20_w24")
    # fit, miss, fit, miss, miss -> stop: the sixth is never timed; a miss between two fits
    # does not end the walk, and the largest fitting one wins even though a larger one missed
    latency = dict(zip(ladder, (1.0, 6.0, 2.0, 6.0, 6.0, 1.0), strict=True))
    calls: list[str] = []
    seen: list[str] = []
    selection = select_student(
        budget_profile(tmp_path, 5.0), 10, "cifar_resnet", timer=timer_from(latency, calls),
        candidates=ladder, on_candidate=lambda c: seen.append(c.name),
    )  # fmt: skip
    assert selection.chosen == "cifar_resnet14_w16"
    assert calls == list(ladder[:5]) and seen == calls
    assert [c.fits for c in selection.candidates] == [True, False, True, False, False, None]
    untimed = selection.candidates[-1]
    assert (untimed.p50_ms, untimed.p90_ms, untimed.at_percentile_ms) == (None, None, None)


@pytest.mark.parametrize(("patience", "timed"), [(1, 2), (2, 3), (3, 4)])
def test_patience_counts_consecutive_misses(
    tmp_path: Path, named_export, patience: int, timed: int
) -> None:
    latency = dict(zip(SMALL, (1.0, 6.0, 6.0, 6.0), strict=True))
    calls: list[str] = []
    selection = select_student(
        budget_profile(tmp_path, 5.0), 10, "cifar_resnet", timer=timer_from(latency, calls),
        candidates=SMALL, patience=patience,
    )  # fmt: skip
    assert len(calls) == timed and selection.chosen == "cifar_resnet8_w8"


def test_table_rows_carry_the_timer_numbers(tmp_path: Path, named_export) -> None:
    def timer(model: bytes, shape: tuple[int, int, int]) -> LatencyStats:
        assert shape == (1, 8, 8)
        base = {"cifar_resnet8_w8": 1.0, "cifar_resnet8_w16": 2.0}[model.decode()]
        return flat_stats(base + 0.123456, p50=base, p90=base + 0.5)

    pair = SMALL[:2]
    selection = select_student(budget_profile(tmp_path, 50.0), 10, "cifar_resnet", timer=timer,
                               candidates=pair)  # fmt: skip
    rows = [(c.name, c.p50_ms, c.p90_ms, c.at_percentile_ms) for c in selection.candidates]
    assert rows == [(pair[0], 1.0, 1.5, 1.1235), (pair[1], 2.0, 2.5, 2.1235)]
    small, large = selection.candidates
    assert small.params == 19810 and (small.mflops, large.mflops) == (0.387, 1.527)
    assert selection.family == "cifar_resnet" and selection.chosen == pair[1]
    assert small.mflops == round(small.mflops, 3) and small.predicted_ms is None
    # the table survives a JSON round trip (selection.json is read back by --resume)
    from compressor.selection.table import Selection

    assert Selection.from_dict(selection.to_dict()) == selection


def test_ladder_is_walked_in_flops_order_whatever_the_request_order(
    tmp_path: Path, named_export
) -> None:
    calls: list[str] = []
    latency = dict.fromkeys(SMALL, 1.0)
    selection = select_student(
        budget_profile(tmp_path, 5.0), 10, "cifar_resnet", timer=timer_from(latency, calls),
        candidates=tuple(reversed(SMALL)),
    )  # fmt: skip
    assert calls == list(SMALL) and selection.chosen == SMALL[-1]


def test_no_fit_message_names_the_judged_fastest(tmp_path: Path, named_export) -> None:
    latency = dict(zip(SMALL, (9.0, 7.0, 8.0, 1.0), strict=True))  # stops after resnet8_w16
    expected = (
        "no student fits the budget: the fastest candidate cifar_resnet8_w16 takes 7.000 ms "
        "at p90, the budget is 5 ms (4.500 ms after the 10% safety margin)"
    )
    with pytest.raises(CompressorError) as caught:
        select_student(budget_profile(tmp_path, 5.0), 10, "cifar_resnet", timer=timer_from(latency),
                       candidates=SMALL)  # fmt: skip
    assert str(caught.value) == expected


def _constructed_selection():
    from compressor.selection.table import Candidate, Selection, TeacherTiming
    from compressor.selection.target_calibration import LatencyPredictor

    rows = [
        Candidate("cifar_resnet8_w8", 19810, 0.387, 1.0, 1.5, 1.25, 2.5, True, 7.2, True),
        Candidate("cifar_resnet8_w16", 77754, 1.527, 2.0, 2.5, 2.25, 4.5, True, 4.0, True),
        Candidate("cifar_resnet14_w16", 174970, 3.297, 4.0, 5.0, 4.5, 9.0, False, 2.0, True),
        Candidate("cifar_resnet20_w16", 272186, 5.066),
    ]
    return Selection(
        family="cifar_resnet", chosen="cifar_resnet8_w16", budget_ms=5.0, target_ms=4.5,
        percentile=90.0, candidates=rows, calibrated_for="pi4",
        predictor=LatencyPredictor((1.0, 10.0), (2.0, 3.0)),
        teacher=TeacherTiming("cifar_resnet20_w32", 1084010, 20.225, 9.0, 8.0, 9.5, False),
        min_speedup=1.5,
    )  # fmt: skip


def test_selection_round_trips_through_json_with_predictor_and_teacher() -> None:
    import json

    from compressor.selection.table import Selection

    selection = _constructed_selection()
    data = json.loads(json.dumps(selection.to_dict()))
    assert data["predictor"] == {"mflops": [1.0, 10.0], "ratios": [2.0, 3.0]}
    assert data["teacher"]["arch"] == "cifar_resnet20_w32" and data["min_speedup"] == 1.5
    again = Selection.from_dict(data)
    assert again == selection
    assert again.predict(2.0, 1.0) == selection.predict(2.0, 1.0) == pytest.approx(4.0)
    assert again.chosen_candidate.name == "cifar_resnet8_w16"


def test_format_table_golden() -> None:
    import dataclasses

    from compressor.selection.table import format_table

    selection = _constructed_selection()
    assert format_table(selection).splitlines() == [
        "candidate                      params    MFLOPs    p50 ms    p90 ms  target ms  speedup  fits  qualifies",  # noqa: E501
        "teacher cifar_resnet20_w32  1,084,010      20.2     8.000     9.500          -    1.00x  no",  # noqa: E501
        "cifar_resnet8_w8               19,810       0.4     1.000     1.500      2.500    7.20x  yes   yes",  # noqa: E501
        "cifar_resnet8_w16              77,754       1.5     2.000     2.500      4.500    4.00x  yes   yes  <- chosen",  # noqa: E501
        "cifar_resnet14_w16            174,970       3.3     4.000     5.000      9.000    2.00x  no    no",  # noqa: E501
        "cifar_resnet20_w16            272,186       5.1         -         -          -        -  -     -",  # noqa: E501
    ]
    for meets, mark in ((True, "yes"), (None, "-")):  # the teacher's own budget verdict
        selection.teacher = dataclasses.replace(selection.teacher, meets_budget=meets)
        assert format_table(selection).splitlines()[1].endswith(f"1.00x  {mark}")
    selection.calibrated_for = None  # host latencies: no target column
    assert format_table(selection).splitlines()[2] == (
        "cifar_resnet8_w8               19,810       0.4     1.000     1.500    7.20x  yes   yes"
    )


@given(
    latencies=st.lists(
        st.floats(0.5, 20.0, allow_nan=False), min_size=len(SMALL), max_size=len(SMALL)
    ),
    budgets=st.lists(st.floats(0.5, 30.0, allow_nan=False), min_size=2, max_size=2),
    patience=st.integers(1, 3),
)
@settings(max_examples=25, deadline=None, derandomize=True)
def test_selection_is_monotonic_in_the_budget_and_matches_a_reference_walk(
    named_export, tmp_path_factory, latencies, budgets, patience
) -> None:
    """A larger budget never chooses a smaller model; the walk matches a plain reference."""
    import dataclasses

    base = load_profile(str(write_profile(tmp_path_factory.mktemp("p") / "p.toml")))
    latency = dict(zip(SMALL, latencies, strict=True))
    chosen_flops = []
    for budget in sorted(budgets):
        profile = dataclasses.replace(base, latency_ms=budget)
        # reference: walk cheapest first, stop after `patience` consecutive misses
        fitting, misses = [], 0
        for name in SMALL:
            if misses >= patience:
                break
            fits = latency[name] <= profile.target_ms
            fitting += [name] if fits else []
            misses = 0 if fits else misses + 1
        try:
            selection = select_student(profile, 10, "cifar_resnet", timer=timer_from(latency),
                                       candidates=SMALL, patience=patience)  # fmt: skip
        except CompressorError:
            assert not fitting
            chosen_flops.append(-1.0)
            continue
        assert selection.chosen == fitting[-1]  # SMALL is in FLOPs order
        chosen_flops.append(next(c.mflops for c in selection.candidates if c.fits and
                                 c.name == selection.chosen))  # fmt: skip
    assert chosen_flops == sorted(chosen_flops)
