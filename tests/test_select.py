from pathlib import Path

import numpy as np
import pytest

from compressor.errors import CompressorError
from compressor.export import onnx_bytes
from compressor.latency import LatencyStats, TimingSettings, measure_onnx, summarize
from compressor.profile import load_profile
from compressor.select import select_student
from compressor.students import build_model
from tests.conftest import write_profile


def _stub_timer(latency_by_mflops: dict[float, float], calls: list[int]):
    """A timer whose latency grows with the candidate's size (its serialized length)."""

    def timer(model: bytes, shape: tuple[int, int, int]) -> LatencyStats:
        calls.append(len(model))
        ms = len(model) / 100_000.0  # monotone in parameter count
        return summarize(np.full(20, ms), 90.0, 1.0, TimingSettings())

    return timer


def test_largest_fitting_candidate_is_chosen(tmp_path: Path) -> None:
    calls: list[int] = []
    # serialized sizes of the first candidates, to put the budget between two of them
    sizes = [len(onnx_bytes(build_model(n, 10, 1), (1, 8, 8), 18)) / 100_000 for n in
             ("cifar_resnet8_w16", "cifar_resnet14_w16")]  # fmt: skip
    budget = (sizes[0] + sizes[1]) / 2 / 0.9  # target = budget * (1 - 0.1) lies between them
    profile = load_profile(str(write_profile(tmp_path / "p.toml", **{"budget.latency_ms": budget})))
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
    model = onnx_bytes(build_model("cifar_resnet8_w8", 10, 1), (1, 8, 8), 18)
    settings = TimingSettings(batch_size=3, warmup_runs=1, min_iterations=25, min_seconds=0.0)
    stats = measure_onnx(model, (1, 8, 8), settings, percentile=75)
    assert stats.iterations == 25 and stats.batch_size == 3
    assert stats.min_ms <= stats.p50_ms <= stats.at_percentile_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.cold_start_ms > 0


def test_measure_alternating_flips_the_order_and_pools_rounds(monkeypatch) -> None:
    from compressor import latency

    calls: list[str] = []

    def fake_session(model, input_shape, settings, seed):
        calls.append(model)
        return np.full(settings.min_iterations, 1.0 if model == b"a" else 2.0), 5.0

    monkeypatch.setattr(latency, "_time_session", fake_session)
    settings = TimingSettings(min_iterations=10, min_seconds=0.0, warmup_runs=0)
    a, b = latency.measure_alternating([b"a", b"b"], (1, 8, 8), settings, rounds=3)
    assert calls == [b"a", b"b", b"b", b"a", b"a", b"b"]
    assert (a.iterations, b.iterations) == (30, 30)
    assert (a.p90_ms, b.p90_ms) == (1.0, 2.0)


def test_measure_alternating_times_real_models() -> None:
    from compressor.latency import measure_alternating

    small = onnx_bytes(build_model("cifar_resnet8_w8", 10, 1), (1, 8, 8), 18)
    large = onnx_bytes(build_model("cifar_resnet20_w32", 10, 1), (1, 8, 8), 18)
    settings = TimingSettings(min_iterations=20, min_seconds=0.0, warmup_runs=2)
    stats = measure_alternating([small, large], (1, 8, 8), settings, rounds=2)
    for one in stats:  # real sessions ran: no wall-clock comparison (a shared machine is noisy)
        assert one.iterations == 40 and one.cold_start_ms > 0
        assert 0 < one.min_ms <= one.p50_ms <= one.p90_ms <= one.p99_ms
