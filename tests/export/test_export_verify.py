from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from compressor.export.to_onnx import export_onnx, read_metadata
from compressor.export.verify import verify_onnx
from compressor.latency.profiles import load_profile
from compressor.models.checkpoint import load_bundle
from tests.conftest import write_profile
from tests.onnx_tamper import shift_output_bias


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, teacher_path: Path):
    bundle = load_bundle(teacher_path)
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    result = export_onnx(
        bundle.model, (1, 8, 8), path, opset=18,
        metadata={"class_names": [str(i) for i in range(10)], "mean": [0.5], "std": [0.5]},
    )  # fmt: skip
    return bundle, path, result


def test_export_has_dynamic_batch_metadata_and_matches_torch(exported) -> None:
    bundle, path, result = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert read_metadata(path)["class_names"] == [str(i) for i in range(10)]
    assert result.opset == 18 and result.size_bytes == path.stat().st_size
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input" and session.get_outputs()[0].name == "logits"
    for batch in (1, 5):
        x = torch.randn(batch, 1, 8, 8)
        (out,) = session.run(None, {"input": x.numpy()})
        assert out.shape == (batch, 10)
        np.testing.assert_allclose(out, bundle.model(x).detach().numpy(), atol=1e-4)


def test_verify_passes_on_faithful_export(exported, digits_splits, tmp_path: Path) -> None:
    bundle, path, _ = exported
    # parity is under test: a budget no busy host misses (the gates' logic: test_verify_gates)
    profile = load_profile(str(write_profile(tmp_path / "p.toml", **{"budget.latency_ms": 1000.0})))
    report = verify_onnx(
        path, digits_splits.test, (0.5,), (0.5,), profile,
        reference=bundle.model, teacher=bundle.model,
    )  # fmt: skip
    assert report.images == len(digits_splits.test)
    assert report.parity["top1_agreement"] == 1.0
    assert report.parity["max_abs_logit_diff"] < 1e-3
    assert report.top1_drop == pytest.approx(0.0, abs=1e-9)
    assert report.student_top5 is not None and report.student_top5 >= report.student_top1
    assert [g.name for g in report.gates] == [
        "min_top1",
        "max_top1_drop",
        "parity_top1_agreement",
        "parity_max_abs_logit_diff",
        "latency_p90",
    ]
    assert report.passed and report.failed() == [], [g.detail for g in report.failed()]
    assert all(g.passed and g.detail.endswith(": ok") for g in report.gates)
    assert report.student_top1 == report.teacher_top1 > 0.5  # trained: chance is 0.1


def test_one_shifted_logit_fails_parity_on_the_max(exported, digits_splits, tmp_path) -> None:
    """Class 0's logit off by 0.005 on every image: the mean |diff| (0.0005) is under the
    1e-3 tolerance, the max is not, and the max is what the gate judges."""
    bundle, path, _ = exported
    tampered = shift_output_bias(path, tmp_path / "tampered.onnx", 0.005)
    # parity is under test: a budget no busy host misses (the gates' logic: test_verify_gates)
    profile = load_profile(str(write_profile(tmp_path / "p.toml", **{"budget.latency_ms": 1000.0})))
    report = verify_onnx(
        tampered, digits_splits.test, (0.5,), (0.5,), profile, reference=bundle.model
    )
    assert report.parity["max_abs_logit_diff"] == pytest.approx(0.005, abs=1e-4)
    assert report.parity["mean_abs_logit_diff"] == pytest.approx(0.0005, abs=1e-4)
    assert report.parity["top1_agreement"] >= 0.995
    assert [g.name for g in report.failed()] == ["parity_max_abs_logit_diff"]
    assert not report.passed


def test_second_onnx_consumer_agrees(exported) -> None:
    """OpenCV's DNN module is an independent ONNX implementation: its outputs must agree."""
    cv2 = pytest.importorskip("cv2")
    bundle, path, _ = exported
    net = cv2.dnn.readNetFromONNX(str(path))
    x = torch.randn(4, 1, 8, 8)
    net.setInput(x.numpy())
    np.testing.assert_allclose(net.forward(), bundle.model(x).detach().numpy(), atol=1e-4)
