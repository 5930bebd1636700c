"""The verification gates on constructed logits: every value and every boundary is exact.

The model is a bias-free linear layer over 16 one-hot 4x4 images, so image ``i`` produces
column ``i`` of its weight as logits, through PyTorch and onnxruntime alike (exact float sums).
Student, teacher and reference are different weight matrices: accuracies, top-1 drop, parity
differences and agreement are chosen, not measured. Latency comes from a constructed timer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from compressor.data.splits import Split
from compressor.export import verify
from compressor.export.to_onnx import export_onnx
from compressor.export.verify import topk_accuracy, verify_onnx
from compressor.latency.profiles import load_profile
from compressor.latency.timing import LatencyStats, TimingSettings
from tests.conftest import write_profile
from tests.fakes import flat_stats

N, C, SHAPE = 16, 10, (1, 4, 4)
MEAN, STD = (0.0,), (1.0,)
# Label rank in the student's ordering: 12 top-1 hits, 2 more in the top 5 (ranks 1 and 3),
# 2 outside it (ranks 5 and 7: a top-2 or top-6 count would differ).
STUDENT_RANK = [0] * 12 + [1, 3, 5, 7]
TEACHER_RANK = [0] * 14 + [1, 9]  # the teacher gets 14 of 16 right
LABELS = [(i + r) % C for i, r in enumerate(STUDENT_RANK)]
REPEAT_MS = {0: 3.0, 1: 1.0, 2: 5.0, 3: 2.0, 4: 4.0}  # at-percentile ms by timing seed


def _ranked_logits(top: list[int]) -> torch.Tensor:
    """(N, C) integer logits; row i ranks class (top[i] + k) % C k-th."""
    cols = torch.arange(C)
    return torch.stack([10.0 - ((cols - t) % C).float() for t in top])


STUDENT = _ranked_logits(list(range(N)))  # predicts class i % C for image i
TEACHER = _ranked_logits([(y + r) % C for y, r in zip(LABELS, TEACHER_RANK, strict=True)])


def _linear(logits: torch.Tensor) -> nn.Module:
    layer = nn.Linear(N, logits.shape[1], bias=False)
    with torch.no_grad():
        layer.weight.copy_(logits.T)
    return nn.Sequential(nn.Flatten(), layer).eval()


def _reference(**changes: float) -> nn.Module:
    """The student's logits with ``changes['i_c'] = delta`` added to image i, class c."""
    logits = STUDENT.clone()
    for key, delta in changes.items():
        i, c = (int(v) for v in key.strip("_").split("_"))
        logits[i, c] += delta
    return _linear(logits)


@pytest.fixture(scope="module")
def student_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gates") / "student.onnx"
    export_onnx(_linear(STUDENT), SHAPE, path, opset=18, metadata={})
    return path


@pytest.fixture(scope="module")
def test_split() -> Split:
    images = torch.zeros(N, *SHAPE, dtype=torch.uint8)
    images.view(N, -1)[torch.arange(N), torch.arange(N)] = 255
    return Split(images, torch.tensor(LABELS))


@pytest.fixture
def timings(monkeypatch) -> list[tuple]:
    """Replace the timer in verify with constructed per-repeat latencies; returns its calls."""
    calls: list[tuple] = []

    def fake_measure(model, shape, settings, percentile=90.0, seed=0) -> LatencyStats:
        calls.append((model, shape, settings, percentile, seed))
        ms = REPEAT_MS[seed]
        return flat_stats(ms, percentile=percentile)

    monkeypatch.setattr(verify, "measure_onnx", fake_measure)
    return calls


def _profile(tmp_path: Path, **gates: object):
    values = {"input.shape": "[1, 4, 4]", "budget.latency_ms": 3.0, **gates}
    return load_profile(str(write_profile(tmp_path / "p.toml", **values)))


def _gates(report) -> dict[str, tuple[bool, float, float, str]]:
    return {g.name: (g.passed, g.value, g.threshold, g.comparison) for g in report.gates}


def test_the_constructed_model_gives_the_constructed_logits(student_onnx, test_split) -> None:
    logits = verify.onnx_logits(student_onnx, test_split.images, MEAN, STD)
    np.testing.assert_array_equal(logits, STUDENT.numpy())
    labels = test_split.labels.numpy()
    assert topk_accuracy(logits, labels, 1) == 0.75
    assert topk_accuracy(logits, labels, 5) == 0.875
    assert topk_accuracy(TEACHER.numpy(), labels, 1) == 0.875


def test_onnx_logits_of_no_images_is_an_empty_float32_array(student_onnx, test_split) -> None:
    """Batches of 256 (300 images: two batches, in order); no images: an empty array, not an
    error from concatenating nothing."""
    many = test_split.images.repeat(75, 1, 1, 1)  # 4 one-hot images -> 300
    logits = verify.onnx_logits(student_onnx, many, MEAN, STD)
    single = verify.onnx_logits(student_onnx, test_split.images, MEAN, STD)
    np.testing.assert_array_equal(logits, np.tile(single, (75, 1)))
    empty = verify.onnx_logits(student_onnx, test_split.images[:0], MEAN, STD)
    assert empty.shape == (0, 0) and empty.dtype == np.float32


def test_all_gates_pass_at_their_exact_boundaries(
    student_onnx, test_split, timings, tmp_path: Path
) -> None:
    profile = _profile(
        tmp_path,
        **{"gates.min_top1": 0.75, "gates.max_top1_drop": 0.125, "gates.max_abs_logit_diff": 0.5,
           "gates.min_agreement": 1.0},
    )  # fmt: skip
    report = verify_onnx(
        student_onnx, test_split, MEAN, STD, profile,
        reference=_reference(_0_1=0.5), teacher=_linear(TEACHER), repeats=5,
    )  # fmt: skip
    assert _gates(report) == {
        "min_top1": (True, 0.75, 0.75, ">="),
        "max_top1_drop": (True, 0.125, 0.125, "<="),
        "parity_top1_agreement": (True, 1.0, 1.0, ">="),
        "parity_max_abs_logit_diff": (True, 0.5, 0.5, "<="),
        "latency_p90": (True, 3.0, 3.0, "<="),
    }
    assert report.passed and report.failed() == []
    assert (report.images, report.student_top1, report.student_top5) == (16, 0.75, 0.875)
    assert (report.teacher_top1, report.top1_drop) == (0.875, 0.125)
    assert report.parity == {
        "max_abs_logit_diff": 0.5, "mean_abs_logit_diff": pytest.approx(0.5 / (N * C)),
        "top1_agreement": 1.0, "images": 16,
    }  # fmt: skip
    gate = report.gates[0]
    assert gate.detail == "0.75 >= 0.75: ok"


def test_a_drop_of_exactly_the_gate_passes_though_its_float_difference_is_past_it() -> None:
    """Seen in docs/pruning.md: 90 of 3,000 test images below the teacher, exactly 3 points,
    failed the "at most 3 points" gate because 1769/3000 - 1679/3000 is 0.030000000000000027."""
    teacher, student = 1769 / 3000, 1679 / 3000
    assert teacher - student > 0.03
    drop = verify.top1_drop_of(teacher, student, 3000)
    assert drop == 0.03 and verify.make_gate("max_top1_drop", drop, 0.03, "<=").passed
    assert not verify.make_gate("max_top1_drop", verify.top1_drop_of(1770 / 3000, student, 3000),
                                0.03, "<=").passed  # fmt: skip
    assert verify.top1_drop_of(0.5, 0.25, 0) == 0.25  # no images: the plain difference
    assert np.isnan(verify.top1_drop_of(0.5, float("nan"), 3000))  # unmeasured stays unmeasured


def test_each_gate_fails_just_past_its_boundary(
    student_onnx, test_split, timings, tmp_path: Path
) -> None:
    profile = _profile(
        tmp_path,
        **{"gates.min_top1": 0.76, "gates.max_top1_drop": 0.12, "gates.max_abs_logit_diff": 0.49,
           "gates.min_agreement": 0.95, "budget.latency_ms": 2.99},
    )  # fmt: skip
    report = verify_onnx(
        student_onnx, test_split, MEAN, STD, profile,
        reference=_reference(_0_1=0.5, _5_0=6.0), teacher=_linear(TEACHER), repeats=5,
    )  # fmt: skip
    failed = {g.name: g for g in report.failed()}
    assert list(failed) == [
        "min_top1", "max_top1_drop", "parity_top1_agreement", "parity_max_abs_logit_diff",
        "latency_p90",
    ]  # fmt: skip
    assert not report.passed
    assert report.parity["top1_agreement"] == 15 / 16  # image 5's reference argmax moved
    assert report.parity["max_abs_logit_diff"] == 6.0
    assert failed["min_top1"].detail == "0.75 >= 0.76: missed by 0.01"
    assert failed["latency_p90"].detail == "3 ms <= 2.99 ms: missed by 0.01 ms"


def test_parity_is_judged_on_the_max_not_the_mean(
    student_onnx, test_split, timings, tmp_path: Path
) -> None:
    """One logit of one image off by 0.5: the mean |diff| is tiny, the gate must still fail."""
    profile = _profile(tmp_path, **{"gates.max_abs_logit_diff": 0.01})
    report = verify_onnx(
        student_onnx, test_split, MEAN, STD, profile, reference=_reference(_3_7=0.5)
    )
    assert report.parity["mean_abs_logit_diff"] < 0.01 < report.parity["max_abs_logit_diff"]
    assert report.parity["top1_agreement"] == 1.0
    assert [g.name for g in report.failed()] == ["parity_max_abs_logit_diff"]


def test_latency_is_the_median_repeat_and_spread_is_kept(
    student_onnx, test_split, timings, tmp_path: Path
) -> None:
    profile = _profile(tmp_path, **{"budget.percentile": 75, "input.batch_size": 2})
    report = verify_onnx(student_onnx, test_split, MEAN, STD, profile, repeats=5)
    assert [c[4] for c in timings] == [0, 1, 2, 3, 4]  # one fresh seed per repeat
    assert all(c[0] == student_onnx and c[1] == SHAPE and c[3] == 75.0 for c in timings)
    assert all(c[2] == TimingSettings.from_profile(profile) for c in timings)
    assert report.latency_repeats == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert report.latency.at_percentile_ms == 3.0  # the median repeat, seed 0
    assert report.latency_spread == pytest.approx((5.0 - 1.0) / 3.0)
    assert [g.name for g in report.gates] == ["min_top1", "latency_p75"]
    assert report.teacher_top1 is None and report.top1_drop is None and report.parity is None
    as_dict = report.to_dict()
    fields = {f.name for f in dataclasses.fields(report)}
    assert set(as_dict) == fields | {"latency_spread", "passed", "exit_code", "inconclusive_gates"}
    assert as_dict["passed"] is True and as_dict["latency"]["at_percentile_ms"] == 3.0
    assert as_dict["latency_spread"] == report.latency_spread


@pytest.mark.parametrize(("repeats", "timed"), [(1, 1), (0, 1), (2, 2)])
def test_repeats(student_onnx, test_split, timings, tmp_path: Path, repeats, timed) -> None:
    report = verify_onnx(student_onnx, test_split, MEAN, STD, _profile(tmp_path), repeats=repeats)
    assert len(timings) == timed and len(report.latency_repeats) == timed
    assert report.latency.at_percentile_ms == 3.0  # seeds 0 (3 ms) and 1 (1 ms): median 3
    assert report.latency_spread == (0.0 if timed == 1 else (3.0 - 1.0) / 3.0)


def test_calibrated_latency_gate_judges_the_prediction(
    student_onnx, test_split, timings, tmp_path: Path
) -> None:
    seen: list[float] = []

    def predict(host_ms: float) -> float:
        seen.append(host_ms)
        return 2.5 if host_ms == 3.0 else 99.0

    profile = _profile(tmp_path, **{"budget.latency_ms": 2.75})  # host 3 ms would miss it
    report = verify_onnx(student_onnx, test_split, MEAN, STD, profile, predict_target=predict)
    assert seen == [3.0] and report.predicted_target_ms == 2.5
    assert len(timings) == 3  # three repeats unless told
    assert _gates(report)["latency_p90_predicted_target"] == (True, 2.5, 2.75, "<=")
    slower = dataclasses.replace(profile, latency_ms=2.4)
    report = verify_onnx(student_onnx, test_split, MEAN, STD, slower, predict_target=predict)
    assert not report.passed and report.failed()[0].name == "latency_p90_predicted_target"
    fallback = verify_onnx(
        student_onnx, test_split, MEAN, STD, dataclasses.replace(profile, latency_ms=3.0),
        predict_target=lambda ms: None,
    )  # fmt: skip
    assert [g.name for g in fallback.gates][-1] == "latency_p90" and fallback.passed


def test_top5_only_with_ten_or_more_classes(tmp_path: Path, test_split, timings) -> None:
    few = tmp_path / "few.onnx"
    export_onnx(_linear(STUDENT[:, :9] * 1.0), SHAPE, few, opset=18, metadata={})
    labels = torch.tensor([y if y < 9 else 0 for y in LABELS])
    report = verify_onnx(few, Split(test_split.images, labels), MEAN, STD, _profile(tmp_path))
    assert report.student_top5 is None
