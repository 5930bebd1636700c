"""Target calibration: predictor arithmetic, profile round trip, selection on predicted times."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from compressor.cli.main import app
from compressor.errors import CompressorError
from compressor.latency.profiles import load_profile
from compressor.latency.timing import LatencyStats, TimingSettings, summarize
from compressor.selection.choose import select_student
from compressor.selection.target_calibration import (
    LatencyPredictor,
    calibration_table,
    reference_suite,
    write_calibrated_profile,
)
from tests.conftest import write_profile


def _timer(scale: float):
    """A deterministic 'device': latency proportional to the serialized model size."""

    def timer(model: bytes, shape: tuple[int, int, int]) -> LatencyStats:
        return summarize(np.full(10, scale * len(model) / 1e5), 90.0, 1.0, TimingSettings())

    return timer


def test_predictor_is_exact_at_suite_points_and_interpolates_in_log_flops() -> None:
    pred = LatencyPredictor.from_measurements([10.0, 1000.0], [1.0, 10.0], [2.0, 40.0])
    assert pred.ratio(10.0) == pytest.approx(2.0)
    assert pred.ratio(1000.0) == pytest.approx(4.0)
    assert pred.ratio(100.0) == pytest.approx(3.0)  # halfway in log space
    assert pred.ratio(1.0) == pytest.approx(2.0) and pred.ratio(1e6) == pytest.approx(4.0)
    assert pred.predict(5.0, 100.0) == pytest.approx(15.0)


def test_reference_suite_spans_the_ladder() -> None:
    small, large = reference_suite((3, 32, 32)), reference_suite((3, 224, 224))
    assert len(small) == 5 and small[0] == "cifar_resnet8_w8" and small[-1] == "cifar_resnet20_w64"
    assert large[0] == "mobilenet_v3_small_x0.5" and large[-1] == "resnet50"  # the 224-px ladder


def test_calibrated_profile_round_trip_and_prediction(tmp_path: Path) -> None:
    base = write_profile(tmp_path / "base.toml", **{"budget.latency_ms": "8.0"})
    profile = load_profile(str(base))
    table = calibration_table(profile, _timer(3.0), device="emulated board")
    out = write_calibrated_profile(base, tmp_path / "board.toml", "board", table)
    calibrated = load_profile(str(out))
    assert calibrated.name == "board" and calibrated.calibration is not None
    assert calibrated.calibration.device == "emulated board"
    assert calibrated.latency_ms == profile.latency_ms  # the base's settings are kept
    assert calibrated.calibration.models == reference_suite((1, 8, 8))

    # Host is 3x faster than the target: predictions must be 3x the host's measurements.
    # Two candidates (about 1.1 and 3.1 ms on the host against a 7.2 ms target): both fit on
    # the host, only the smaller on the target. Both walks build them from the same seed, so
    # the second exports nothing new (tests/conftest.py); resnet8_w8 is the suite's own graph.
    pair = ("cifar_resnet8_w8", "cifar_resnet8_w16")
    torch.manual_seed(0)
    selection = select_student(calibrated, 10, "cifar_resnet", timer=_timer(1.0), candidates=pair)
    assert selection.calibrated_for == "emulated board"
    assert [c.name for c in selection.candidates] == list(pair)
    for cand in selection.candidates:
        assert cand.at_percentile_ms is not None
        assert cand.predicted_ms == pytest.approx(3 * cand.at_percentile_ms, rel=1e-3)
        assert cand.fits == (cand.predicted_ms <= calibrated.target_ms)
    assert [c.fits for c in selection.candidates] == [True, False]
    # The same budget judged on the host alone would choose a larger student.
    torch.manual_seed(0)
    uncalibrated = select_student(profile, 10, "cifar_resnet", timer=_timer(1.0), candidates=pair)
    assert all(c.predicted_ms is None and c.fits for c in uncalibrated.candidates)
    flops = {c.name: c.mflops for c in uncalibrated.candidates}
    assert flops[uncalibrated.chosen] > flops[selection.chosen]


def test_calibration_table_errors(tmp_path: Path) -> None:
    bad = write_profile(
        tmp_path / "bad.toml",
        **{"calibration.models": '["a", "b"]', "calibration.mflops": "[1.0, 2.0, 3.0]",
           "calibration.target_ms": "[1.0, 2.0]"},
    )  # fmt: skip
    with pytest.raises(CompressorError, match="equal lengths"):
        load_profile(str(bad))
    neg = write_profile(
        tmp_path / "neg.toml",
        **{"calibration.models": '["a", "b"]', "calibration.mflops": "[1.0, 2.0]",
           "calibration.target_ms": "[1.0, -2.0]"},
    )  # fmt: skip
    with pytest.raises(CompressorError, match=r"calibration\.target_ms"):
        load_profile(str(neg))


def test_profiles_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["profiles", "list"])
    assert listed.exit_code == 0 and len(listed.stdout.strip().splitlines()) >= 5
    shown = runner.invoke(app, ["profiles", "show", "cpu-1thread"])
    assert shown.exit_code == 0 and '"latency_ms": 1.5' in shown.stdout
    schema = runner.invoke(app, ["profiles", "show", "--schema"])
    assert schema.exit_code == 0 and "`calibration.target_ms`" in schema.stdout
    wrong = runner.invoke(app, ["profiles", "show", "cpu-1thred"])
    assert wrong.exit_code == 2 and "did you mean 'cpu-1thread'" in wrong.stderr

    base = write_profile(tmp_path / "base.toml")
    out = tmp_path / "target.toml"
    args = ["profiles", "calibrate", "--profile", str(base), "--out", str(out), "--device", "t"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert load_profile(str(out)).calibration.device == "t"
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    assert all(math.isfinite(v) for v in load_profile(str(out)).calibration.target_ms)
