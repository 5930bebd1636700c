"""The standalone export / verify / inspect commands that a CI job calls."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compressor.cli.main import app
from tests.conftest import write_profile
from tests.onnx_tamper import shift_output_bias

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(teacher_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained 8x8 digits bundle exported through `compressor export`."""
    out = tmp_path_factory.mktemp("cli_export") / "model.onnx"
    result = runner.invoke(app, ["export", "--student", str(teacher_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _verify(model: Path, digits_root: Path, profile: Path, *extra: str):
    return runner.invoke(
        app, ["verify", str(model), "--data", str(digits_root), "--profile", str(profile), *extra]
    )


def test_verify_passes_and_writes_reports_and_junit(
    exported: Path, teacher_path: Path, digits_root: Path, tmp_path: Path
) -> None:
    junit = tmp_path / "gates.xml"
    result = _verify(
        exported, digits_root, write_profile(tmp_path / "p.toml"),
        "--reference", str(teacher_path), "--teacher", str(teacher_path),
        "--out", str(tmp_path / "v"), "--junit", str(junit),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "v" / "verify.json").read_text())
    assert report["passed"] and report["parity"]["top1_agreement"] == 1.0
    assert report["student_top5"] is not None and len(report["latency_repeats"]) == 3
    root = ET.parse(junit).getroot()
    cases = root.findall("./testsuite/testcase")
    assert {c.get("name") for c in cases} == {g["name"] for g in report["gates"]}
    assert root.find("./testsuite").get("failures") == "0"


def test_perturbed_weight_fails_parity_with_exit_1(
    exported: Path, teacher_path: Path, digits_root: Path, tmp_path: Path
) -> None:
    tampered = shift_output_bias(exported, tmp_path / "tampered.onnx", 0.05)
    junit = tmp_path / "gates.xml"
    result = _verify(
        tampered, digits_root, write_profile(tmp_path / "p.toml"),
        "--reference", str(teacher_path), "--junit", str(junit), "--json",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    failed = [g["name"] for g in report["gates"] if not g["passed"]]
    assert "parity_max_abs_logit_diff" in failed and not report["passed"]
    assert report["parity"]["max_abs_logit_diff"] == pytest.approx(0.05, abs=1e-4)
    failures = ET.parse(junit).getroot().findall("./testsuite/testcase/failure")
    assert len(failures) == len(failed)


def test_verify_bad_inputs_exit_2(exported: Path, digits_root: Path, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "p.toml")
    missing = _verify(tmp_path / "none.onnx", digits_root, profile)
    assert missing.exit_code == 2 and "ONNX model not found" in missing.stderr
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage" * 10)
    junk = _verify(tmp_path / "junk.onnx", digits_root, profile)
    assert junk.exit_code == 2 and "not a readable ONNX model" in junk.stderr
    other = write_profile(tmp_path / "q.toml", **{"input.shape": "[1, 16, 16]"})
    shape = _verify(exported, digits_root, other)
    assert shape.exit_code == 2 and "exported for input [1, 8, 8]" in shape.stderr


def test_inspect_onnx_and_checkpoint(exported: Path, teacher_path: Path) -> None:
    onnx_info = json.loads(runner.invoke(app, ["inspect", str(exported)]).stdout)
    assert onnx_info["inputs"]["input"] == ["batch", 1, 8, 8]
    assert onnx_info["metadata"]["mean"] == [0.5] and onnx_info["opset"] == 18
    ckpt = json.loads(runner.invoke(app, ["inspect", str(teacher_path)]).stdout)
    assert ckpt["format"] == "bundle" and ckpt["num_classes"] == 10 and ckpt["mflops"] > 0
