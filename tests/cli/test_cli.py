"""End-to-end CLI tests on the embedded digits: real training, export and onnxruntime."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from compressor.cli.main import app
from compressor.data.splits import normalize
from compressor.models.checkpoint import load_bundle
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


def _graph_size(model: Path | bytes) -> int:
    return len(model) if isinstance(model, bytes) else Path(model).stat().st_size


def _is_int8(model: Path | bytes) -> bool:
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    return b"QuantizeLinear" in data


@pytest.fixture
def size_timed(monkeypatch):
    """Deterministic latencies: every real onnxruntime session still runs, but the times it
    reports are the graph's size in MB as milliseconds (fp32), or ``int8_ms[0]`` for a
    quantized graph, and the CPU probe reports an idle host. So selection, verification, the
    int8 decision and the teacher speedup are decided by constructed numbers, never by the
    load on a shared machine."""
    from compressor.latency import cpu as cpu_check
    from compressor.latency import paired as paired_timing
    from compressor.latency import timing as latency

    real_open, real_block = latency.open_session, latency.time_block
    graphs: dict[int, Path | bytes] = {}
    int8_ms = [0.05]

    def opened(model, input_shape, settings, seed=0):
        session, feed, cold = real_open(model, input_shape, settings, seed)
        graphs[id(session)] = model
        return session, feed, cold

    def timed(session, feed, iterations, seconds):
        times = real_block(session, feed, iterations, seconds)
        model = graphs[id(session)]
        return np.full(times.shape, int8_ms[0] if _is_int8(model) else _graph_size(model) / 1e6)

    for module in (latency, paired_timing):
        monkeypatch.setattr(module, "open_session", opened)
        monkeypatch.setattr(module, "time_block", timed)
    idle = cpu_check.CpuUse(1.0, 0.0, 1, 1.0)
    monkeypatch.setattr(cpu_check.CpuProbe, "stop", lambda self: idle)
    return int8_ms


# Measured on the conftest teacher (resnet20_w32, 4 epochs) and this seeded run (8x8 digits,
# 2 epochs, 450 test images): teacher top-1 0.653, resnet8_w16 student 0.713, resnet8_w8 0.38.
# A chance-level student scores about 0.1, and one that always answers the same class about 0.1
# (the ten classes are balanced): neither reaches these floors.
STUDENT_TOP1_FLOOR = 0.5
SMALL_STUDENT_TOP1_FLOOR = 0.25


def test_run_end_to_end(teacher_path: Path, digits_root: Path, tmp_path: Path, size_timed) -> None:
    out = tmp_path / "run"
    profile = write_profile(
        tmp_path / "p.toml", **{"gates.min_top1": STUDENT_TOP1_FLOOR, "gates.max_top1_drop": 0.3}
    )
    result = _run(teacher_path, digits_root, profile, out)
    assert result.exit_code == 0, result.output
    assert "result: PASS" in result.stdout
    for name in ("student.onnx", "student.pt", "report.json", "report.md", "selection.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= REPORT_KEYS
    assert report["passed"] is True and report["failed_gates"] == []
    assert all(g["passed"] for g in report["gates"])

    # selection: the largest candidate that qualifies in the run's own table, judged on the
    # constructed (size-based) latencies
    table = report["selection"]["candidates"]
    assert [c["name"] for c in table] == ["cifar_resnet8_w8", "cifar_resnet8_w16"]
    for cand in table:
        assert cand["fits"] is True  # 0.1 and 0.3 ms against a 4.5 ms target
    qualifying = [c for c in table if c["fits"] and c.get("faster") is not False]
    assert report["selection"]["chosen"] == max(qualifying, key=lambda c: c["mflops"])["name"]
    # a first run on this host (the test's own memory file): searched, then remembered
    remembered = report["selection"]["remembered"]
    assert remembered["prior"] is None and remembered["kept"] is False
    stored = json.loads(Path(remembered["path"]).read_text())
    assert [entry["chosen"] for entry in stored.values()] == [report["selection"]["chosen"]]

    # accuracy: real numbers, not just "a report was written"
    acc = report["accuracy"]
    assert acc["images"] == report["data"]["test"] == 450
    assert STUDENT_TOP1_FLOOR < acc["student_top1"] <= 1.0, acc
    assert acc["teacher_top1"] > 0.5, acc
    assert acc["top1_drop"] == pytest.approx(acc["teacher_top1"] - acc["student_top1"])
    assert acc["top1_drop"] <= 0.3
    assert acc["student_top5"] >= acc["student_top1"]
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["min_top1"]["value"] == acc["student_top1"]
    assert gates["max_top1_drop"]["value"] == acc["top1_drop"]
    history = report["distillation"]["history"]
    assert len(history) == 2 and history[-1]["val_top1"] > STUDENT_TOP1_FLOOR - 0.1

    # parity between the shipped ONNX and the PyTorch student on the 450 test images
    parity = report["parity"]
    assert parity["images"] == 450 and parity["top1_agreement"] >= 0.995
    assert 0.0 <= parity["mean_abs_logit_diff"] <= parity["max_abs_logit_diff"] < 1e-3
    assert gates["parity_max_abs_logit_diff"]["value"] == parity["max_abs_logit_diff"]

    # latency: the constructed numbers came through unchanged
    chosen_size = (out / "student.onnx").stat().st_size
    assert report["latency"]["at_percentile_ms"] == pytest.approx(chosen_size / 1e6)
    assert report["latency"]["iterations"] >= 20

    # the default loss: KD with teacher-bias elimination (issue #25, docs/benchmarks.md)
    loss = report["distillation"]["loss"]
    assert (loss["method"], loss["bias_aware"], loss["rectification"]) == ("kd", True, "drop")
    step = report["distillation"]["step"]
    assert step["precision"] == "fp32" and step["teacher_batchnorm_folded"] is True
    assert "(fp32, channels-last, teacher BN folded)" in (out / "report.md").read_text()
    assert set(report["bias"]["teacher_train_error_per_class"]) == {str(i) for i in range(10)}

    # The ONNX model agrees with the PyTorch student on real test images.
    student = load_bundle(out / "student.pt")
    files = sorted((digits_root / "test" / "3").glob("*.png"))[:16]
    images = torch.stack([torch.tensor(np.array(Image.open(p)))[None] for p in files])
    x = normalize(images, student.mean, student.std)
    session = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(onnx_out, student.model(x).detach().numpy(), atol=1e-4)
    assert (onnx_out.argmax(1) == 3).mean() > STUDENT_TOP1_FLOOR
    assert "## Gates" in (out / "report.md").read_text()


def test_failed_gate_exits_1_and_names_it(
    teacher_path: Path, small_digits_root: Path, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "strict.toml", **{"gates.min_top1": "1.0"})
    out = tmp_path / "run"
    result = _run(teacher_path, small_digits_root, profile, out, "--json")
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
    torch.save(load_bundle(teacher_path).model.state_dict(), state_dict)
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


@pytest.mark.parametrize(("int8_ms", "use_int8"), [(0.05, True), (0.2, False)])
def test_int8_profile_quantizes_verifies_and_decides(
    teacher_path: Path, digits_root: Path, tmp_path: Path, size_timed, int8_ms, use_int8
) -> None:
    """The keep-or-drop decision on constructed latencies: the fp32 resnet8_w8 graph times at
    ~0.114 ms, its int8 graph at ``int8_ms`` (faster, then slower), the teacher at ~0.344 ms."""
    size_timed[0] = int8_ms
    profile = write_profile(
        tmp_path / "int8.toml",
        **{
            "export.quantization": '"int8"',
            "gates.max_top1_drop": 0.4,
            "gates.min_top1": SMALL_STUDENT_TOP1_FLOOR,
        },
    )
    out = tmp_path / "run"
    args = ["run", "--teacher", str(teacher_path), "--data", str(digits_root), "--profile",
            str(profile), "--out", str(out), "--epochs", "2", "--batch-size", "64",
            "--no-hflip", "--candidates", "cifar_resnet8_w8", "--quiet", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is True
    int8 = report["int8"]
    decision = int8["decision"]
    assert int8["quantize"]["qdq_nodes"] > 0
    assert decision["use_int8"] is use_int8, decision["reason"]
    fp32_ms = (out / "student.onnx").stat().st_size / 1e6
    assert decision["fp32_ms"] == pytest.approx(fp32_ms) and decision["int8_ms"] == int8_ms
    paired = int8["paired_latency"]  # the speed question, timed interleaved
    assert (decision["fp32_ms"], decision["int8_ms"]) == (
        paired["reference"]["at_percentile_ms"],
        paired["candidate"]["at_percentile_ms"],
    )
    assert paired["rounds"] >= 8 and paired["candidate"]["iterations"] >= 8 * 10
    assert decision["speedup_ci"] == [paired["ci_low"], paired["ci_high"]]
    assert abs(decision["int8_top1"] - decision["fp32_top1"]) <= 0.03  # calibrated int8
    assert decision["fp32_top1"] == report["accuracy"]["student_top1"] > SMALL_STUDENT_TOP1_FLOOR
    shipped = Path(report["shipped_model"])
    assert shipped.is_file()
    assert shipped.name == ("student.int8.onnx" if use_int8 else "student.onnx")
    assert (out / "student.int8.onnx").exists() is use_int8
    names = [g["name"] for g in report["gates"]]
    if use_int8:
        assert decision["reason"].startswith("kept int8")
        assert "int8_min_top1" in names and "int8_max_top1_drop" in names
        assert "parity_max_abs_logit_diff" in names  # the fp32 export's parity still gates
        assert not any(n in ("min_top1", "max_top1_drop") for n in names)
    else:
        assert decision["reason"].startswith("kept fp32") and "not faster" in decision["reason"]
        assert not any(n.startswith("int8_") for n in names)


def test_distill_stage_reruns_alone_then_resume_completes(
    teacher_path: Path, small_digits_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    profile = write_profile(tmp_path / "p.toml")
    assert _run(teacher_path, small_digits_root, profile, out).exit_code == 0
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
    assert report["distillation"]["loss"]["bias_aware"] is False  # the distill command's change
    assert len(report["distillation"]["history"]) == 1
    assert report["distillation"]["train"]["precision"] == "bf16"
    assert report["distillation"]["step"]["precision"] == "bf16"  # bf16 autocast on CPU
    bad = runner.invoke(app, ["distill", "--out", str(out), "--method", "nope"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error:")
