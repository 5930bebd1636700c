"""End-to-end CLI tests on the embedded digits: real training, export and onnxruntime."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from compressor.cli import app
from compressor.data import normalize
from compressor.teacher import load_teacher
from tests.conftest import write_profile

runner = CliRunner()
FAST = ["--epochs", "2", "--batch-size", "64", "--no-hflip", "--candidates",
        "cifar_resnet8_w8,cifar_resnet8_w16", "--quiet"]  # fmt: skip

REPORT_KEYS = {
    "schema_version", "passed", "exit_code", "failed_gates", "teacher", "profile", "data",
    "selection", "distillation", "bias", "accuracy", "parity", "latency", "gates", "size",
    "export", "artifacts", "provenance", "warnings",
}  # fmt: skip


def _run(teacher: Path, data: Path, profile: Path, out: Path, *extra: str):
    args = ["run", "--teacher", str(teacher), "--data", str(data), "--profile", str(profile),
            "--out", str(out), *FAST, *extra]  # fmt: skip
    return runner.invoke(app, args)


def test_run_end_to_end(teacher_path: Path, digits_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _run(teacher_path, digits_root, write_profile(tmp_path / "p.toml"), out)
    assert result.exit_code == 0, result.output
    assert "result: PASS" in result.stdout
    for name in ("student.onnx", "student.pt", "report.json", "report.md", "selection.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= REPORT_KEYS
    assert report["passed"] is True and report["selection"]["chosen"] == "cifar_resnet8_w16"
    assert len(report["distillation"]["history"]) == 2
    assert report["distillation"]["loss"]["bias_aware"] is True
    step = report["distillation"]["step"]
    assert step["precision"] == "fp32" and step["teacher_batchnorm_folded"] is True
    assert "(fp32, channels-last, teacher BN folded)" in (out / "report.md").read_text()
    assert set(report["bias"]["teacher_train_error_per_class"]) == {str(i) for i in range(10)}
    assert report["accuracy"]["images"] == report["data"]["test"]
    assert report["latency"]["iterations"] >= 20

    # The ONNX model agrees with the PyTorch student on real test images.
    student = load_teacher(out / "student.pt")
    files = sorted((digits_root / "test" / "3").glob("*.png"))[:16]
    images = torch.stack([torch.tensor(np.array(Image.open(p)))[None] for p in files])
    x = normalize(images, student.mean, student.std)
    session = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(onnx_out, student.model(x).detach().numpy(), atol=1e-4)
    assert "## Gates" in (out / "report.md").read_text()


def test_failed_gate_exits_1_and_names_it(
    teacher_path: Path, digits_root: Path, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "strict.toml", **{"gates.min_top1": "1.0"})
    out = tmp_path / "run"
    result = _run(teacher_path, digits_root, profile, out, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["failed_gates"] == ["min_top1"]
    gate = next(g for g in report["gates"] if g["name"] == "min_top1")
    assert "missed by" in gate["detail"]
    assert json.loads((out / "report.json").read_text())["passed"] is False


def _bad(tmp_path: Path, teacher_path: Path, digits_root: Path):
    """(name, args-modifier) cases of bad input that must exit 2 without touching --out."""
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("name = \n")
    missing_key = write_profile(tmp_path / "nokey.toml", **{"budget.latency_ms": "DELETE"})
    rgb = write_profile(tmp_path / "rgb.toml", **{"input.shape": "[3, 8, 8]"})
    impossible = write_profile(tmp_path / "fast.toml", **{"budget.latency_ms": "0.000001"})
    few = tmp_path / "three_classes"
    for c in range(3):
        (few / str(c)).mkdir(parents=True)
        for p in sorted((digits_root / "train" / str(c)).glob("*.png"))[:5]:
            (few / str(c) / p.name).write_bytes(p.read_bytes())
    no_images = tmp_path / "no_images"
    (no_images / "a").mkdir(parents=True)
    (no_images / "a" / "readme.txt").write_text("hi")
    good = write_profile(tmp_path / "good.toml")
    state_dict = tmp_path / "state_dict.pt"
    torch.save(load_teacher(teacher_path).model.state_dict(), state_dict)
    return [
        ("missing teacher", dict(teacher=tmp_path / "nope.pt"), "checkpoint not found"),
        ("unknown arch", dict(teacher=state_dict, extra=["--arch", "resnet9000"]), "unknown arch"),
        ("wrong arch", dict(extra=["--arch", "resnet18"]), "contradicts"),
        ("class mismatch", dict(data=few), "class count mismatch"),
        ("no images", dict(data=no_images), "no readable images"),
        ("missing data", dict(data=tmp_path / "nodata"), "data folder not found"),
        ("invalid toml", dict(profile=bad_toml), "not valid TOML"),
        ("missing key", dict(profile=missing_key), "missing required key 'budget.latency_ms'"),
        ("channel mismatch", dict(profile=rgb), "3 channel"),
        ("impossible budget", dict(profile=impossible), "no student fits the budget"),
        ("unknown profile", dict(profile=Path("cpu-1thred")), "did you mean"),
        ("bad method", dict(profile=good, extra=["--method", "xx"]), "method"),
    ]


def test_bad_input_exits_2_with_one_line_and_no_output(
    teacher_path: Path, digits_root: Path, tmp_path: Path
) -> None:
    for name, change, message in _bad(tmp_path, teacher_path, digits_root):
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        result = _run(
            change.get("teacher", teacher_path),
            change.get("data", digits_root),
            change.get("profile", write_profile(tmp_path / "ok.toml")),
            out,
            *change.get("extra", []),
        )
        assert result.exit_code == 2, (name, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert message in lines[0], (name, lines[0])
        assert "Traceback" not in result.output
        assert not out.exists(), name


def test_refuses_non_empty_output_folder(
    teacher_path: Path, digits_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "something.txt").write_text("keep me")
    result = _run(teacher_path, digits_root, write_profile(tmp_path / "p.toml"), out)
    assert result.exit_code == 2 and "not empty" in result.stderr
    result = _run(teacher_path, digits_root, write_profile(tmp_path / "p.toml"), out, "--overwrite")
    assert result.exit_code == 2 and "not a compressor run folder" in result.stderr
    assert (out / "something.txt").read_text() == "keep me"


def test_help_lists_commands_with_examples() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "run" in result.stdout and "demo" in result.stdout
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0 and "compressor run --teacher" in result.stdout


@pytest.mark.slow
def test_demo_command(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "result: PASS" in result.stdout


def test_int8_profile_quantizes_verifies_and_decides(
    teacher_path: Path, digits_root: Path, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "int8.toml", **{"export.quantization": '"int8"'})
    out = tmp_path / "run"
    result = _run(teacher_path, digits_root, profile, out, "--json")
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    decision = report["int8"]["decision"]
    assert decision["reason"] and report["int8"]["quantize"]["qdq_nodes"] > 0
    alternating = report["int8"]["alternating_latency"]  # the speed question, timed fairly
    assert (decision["fp32_ms"], decision["int8_ms"]) == (
        alternating["fp32"]["at_percentile_ms"],
        alternating["int8"]["at_percentile_ms"],
    )
    assert alternating["int8"]["iterations"] >= 3 * 20  # 3 rounds of at least 20 runs
    shipped = Path(report["shipped_model"])
    assert shipped.is_file()
    assert shipped.name == ("student.int8.onnx" if decision["use_int8"] else "student.onnx")
    assert (out / "student.int8.onnx").exists() == decision["use_int8"]
    if decision["use_int8"]:
        assert any(g["name"].startswith("int8_") for g in report["gates"])


def test_distill_stage_reruns_alone_then_resume_completes(
    teacher_path: Path, digits_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert _run(teacher_path, digits_root, write_profile(tmp_path / "p.toml"), out).exit_code == 0
    selected = (out / "selection.json").read_text()
    result = runner.invoke(
        app,
        ["distill", "--out", str(out), "--epochs", "1", "--no-bias-aware", "--precision", "bf16",
         "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "student.pt").is_file() and (out / "distill.json").is_file()
    assert not (out / "student.onnx").exists() and not (out / "report.json").exists()
    assert (out / "selection.json").read_text() == selected
    resumed = runner.invoke(app, ["run", "--resume", "--out", str(out), "--json", "--quiet"])
    assert resumed.exit_code in (0, 1), resumed.output
    report = json.loads(resumed.stdout)
    assert report["resumed"]["stages_skipped"] == ["select", "distill"]
    assert report["distillation"]["loss"]["bias_aware"] is False
    assert len(report["distillation"]["history"]) == 1
    assert report["distillation"]["train"]["precision"] == "bf16"
    assert report["distillation"]["step"]["precision"] == "bf16"  # bf16 autocast on CPU
    bad = runner.invoke(app, ["distill", "--out", str(out), "--method", "nope"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error:")
