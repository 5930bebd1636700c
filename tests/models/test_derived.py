"""Derived students: width-pruned copies of the teacher, their record, selection and CLI path."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from compressor.cli.main import app
from compressor.errors import CompressorError
from compressor.latency.profiles import load_profile
from compressor.models.checkpoint import load_bundle, save_bundle
from compressor.models.pruning import (
    NAME_MARK,
    is_derived,
    plan_student_source,
    prune_trajectory,
    unprunable_reason,
)
from compressor.models.registry import build_model
from compressor.models.widths import layer_widths
from compressor.pipeline.single_stage import export_bundle
from compressor.selection.sources import choose_student
from tests.conftest import TINY_SHAPE, write_profile
from tests.fakes import flat_stats

runner = CliRunner()
FAST = ["--epochs", "2", "--batch-size", "64", "--no-hflip", "--quiet"]


@pytest.fixture(scope="module")
def digits_trajectory(teacher_path: Path):
    """The conftest teacher (cifar_resnet20_w32 on 8x8 digits) and its pruning trajectory."""
    teacher = load_bundle(teacher_path)
    return teacher, prune_trajectory(teacher.model, teacher.arch, 10, TINY_SHAPE)


def _save_point(path: Path, point, teacher) -> Path:
    return save_bundle(
        path, point.model, teacher.arch, num_classes=10, in_channels=1, input_size=(8, 8),
        mean=(0.5,), std=(0.5,), class_names=None, pruning=point.record(),
    )  # fmt: skip


def test_trajectory_shrinks_step_by_step_and_leaves_the_teacher_alone(digits_trajectory) -> None:
    teacher, trajectory = digits_trajectory
    before = layer_widths(build_model(teacher.arch, 10, 1))
    assert layer_widths(teacher.model) == before  # pruning worked on a copy
    points = trajectory.points
    assert len(points) >= 4
    ratios = [p.macs_ratio for p in points]
    assert ratios == sorted(ratios, reverse=True) and 0 < ratios[-1] < ratios[0] < 1
    assert [p.params for p in points] == sorted((p.params for p in points), reverse=True)
    assert all(is_derived(p.name) and p.name.startswith(teacher.arch + NAME_MARK) for p in points)
    assert len({p.name for p in points}) == len(points)
    last = layer_widths(points[-1].model)
    assert last["fc"] == {"in_features": 16, "out_features": 10}  # 128 -> 16, classes kept
    assert last["stem.0"]["in_channels"] == 1  # the input is never pruned


def test_derived_bundle_reloads_safely_exports_and_matches(
    digits_trajectory, tmp_path: Path
) -> None:
    teacher, trajectory = digits_trajectory
    point = trajectory.points[len(trajectory.points) // 2]
    path = _save_point(tmp_path / "student.pt", point, teacher)
    raw = torch.load(path, weights_only=True)  # no pickled module inside
    assert raw["arch"] == "cifar_resnet20_w32" and raw["pruning"]["widths"] == layer_widths(
        point.model
    )
    loaded = load_bundle(path)
    assert loaded.pruning["description"] == point.description
    assert loaded.describe()["pruning"]["macs_ratio"] == round(point.macs_ratio, 4)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        expected = point.model.eval()(x)
        np.testing.assert_array_equal(loaded.model(x).numpy(), expected.numpy())
    exported = export_bundle(loaded, TINY_SHAPE, tmp_path / "s.onnx", None)
    session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "s.onnx")).metadata_props}
    assert meta["student_source"] == f"pruned: {point.description}"
    assert exported.metadata["student_source"].endswith(
        f"width-pruned to {point.macs_ratio:.2f}x MACs"
    )


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "regnet_y_400mf"])
def test_torchvision_teachers_with_depthwise_and_squeeze_excitation_prune_and_reload(
    arch: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 6, 3).eval()
    trajectory = prune_trajectory(model, arch, 6, (3, 32, 32), steps=4)
    point = trajectory.points[-1]
    assert point.macs_ratio < 0.5
    path = save_bundle(
        tmp_path / "s.pt", point.model, arch, num_classes=6, in_channels=3, input_size=(32, 32),
        mean=(0.5,) * 3, std=(0.5,) * 3, class_names=None, pruning=point.record(),
    )  # fmt: skip
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(
            load_bundle(path).model(x).numpy(), point.model.eval()(x).numpy(), atol=1e-6
        )


def test_widths_follow_the_channel_block_the_caller_names() -> None:
    """On an AVX-512 host onnxruntime runs convolutions in blocks of 16 channels: widths off the
    block cost time without MACs, so the trajectory rounds every pruned width to the block, and
    rounds up: no layer loses more channels than the step's ratio asks (a 24-channel layer is
    not cut to 16 by a step that removes a quarter)."""
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", 6, 3).eval()
    teacher_widths = layer_widths(model)
    for block in (8, 16):
        trajectory = prune_trajectory(model, "mobilenet_v3_small", 6, (3, 32, 32), steps=4,
                                      round_to=block)  # fmt: skip
        assert trajectory.points[-1].record()["round_to"] == block
        assert f"round_to={block}" in trajectory.points[-1].record()["method"]
        for point in trajectory.points[1:]:
            changed = {
                (layer, key): (teacher_widths[layer][key], value)
                for layer, shape in point.record()["widths"].items()
                for key, value in shape.items()
                if key in ("out_channels", "out_features") and value != teacher_widths[layer][key]
            }
            assert changed and all(new % block == 0 for _, new in changed.values()), changed
            asked = 1 - point.channel_ratio
            assert all(new >= int(old * asked) for old, new in changed.values()), changed
        first = trajectory.points[1].record()["widths"]  # a quarter of the channels asked
        narrow = [k for k in first if teacher_widths[k].get("out_channels") == 24]
        assert narrow and all(first[k]["out_channels"] == 24 for k in narrow)


def test_a_record_that_does_not_match_its_weights_is_one_error(
    digits_trajectory, tmp_path: Path
) -> None:
    teacher, trajectory = digits_trajectory
    path = _save_point(tmp_path / "s.pt", trajectory.points[2], teacher)
    payload = torch.load(path, weights_only=True)
    payload["pruning"]["widths"]["layers.0.conv1"]["out_channels"] += 8
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CompressorError, match="does not match its architecture; shape mismatch"):
        load_bundle(tmp_path / "bad.pt")
    payload["pruning"]["widths"] = {"no.such.layer": {"out_channels": 3}}
    torch.save(payload, tmp_path / "bad2.pt")
    with pytest.raises(CompressorError, match="layers the architecture does not have"):
        load_bundle(tmp_path / "bad2.pt")
    out = tmp_path / "x.onnx"
    result = runner.invoke(
        app, ["export", "--student", str(tmp_path / "bad.pt"), "--out", str(out)]
    )
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "does not match" in result.stderr and not out.exists()


# --- selection along the trajectory, on constructed timings -----------------------------------


@pytest.fixture
def params_timed(monkeypatch):
    """Selection's latency in ms = parameters / 100k; no clock. Exporting every candidate takes
    seconds, so selection's exporter hands the timer the parameter count instead of a graph
    (the ONNX export of a derived student is tested on its own above)."""
    from compressor.models.registry import count_params
    from compressor.selection import choose as select
    from compressor.selection import sources

    def fake_bytes(model, _shape, _opset) -> bytes:
        return str(count_params(model)).encode()

    def timer_for(_profile):
        def timer(graph: bytes, _shape):
            ms = int(graph.decode()) / 1e5
            return flat_stats(ms)

        return timer

    monkeypatch.setattr(select, "onnx_bytes", fake_bytes)
    monkeypatch.setattr(sources, "profile_timer", timer_for)
    monkeypatch.setattr(
        sources, "profile_pair_timer", lambda profile: sources.pair_from_timer(timer_for(profile))
    )


def _selection(teacher, trajectory, profile: Path, source: str, families: list[str]):
    from compressor.models.pruning import SourcePlan

    plan = SourcePlan(source, trajectory, f"{source}: test")
    return choose_student(
        load_profile(str(profile)), teacher.model, teacher.arch, 10, families, plan=plan,
        candidates=("cifar_resnet8_w8", "cifar_resnet8_w16") if families else None,
    )  # fmt: skip


def test_the_search_ships_the_least_pruned_step_that_fits(
    digits_trajectory, tmp_path: Path, params_timed
) -> None:
    teacher, trajectory = digits_trajectory
    params = [p.params for p in trajectory.points]
    target = (params[1] + params[len(params) // 2]) / 2 / 1e5  # between two steps
    profile = write_profile(
        tmp_path / "p.toml", **{"budget.latency_ms": target / 0.9, "budget.safety_margin": 0.1}
    )
    selection = _selection(teacher, trajectory, profile, "pruned", [])
    expected = next(p.name for p in trajectory.points if p.params / 1e5 <= target)
    assert selection.chosen == expected and selection.student_source == "pruned"
    rows = selection.candidates
    assert [r.name for r in rows] == [p.name for p in trajectory.points]
    assert all(r.source == "pruned" and r.macs_ratio is not None for r in rows)
    timed = [r for r in rows if r.at_percentile_ms is not None]
    assert 2 <= len(timed) <= int(np.ceil(np.log2(len(rows)))) + 1  # a search, not a walk
    assert all(r.fits == (r.at_percentile_ms <= target + 1e-9) for r in timed)
    assert "ships cifar_resnet20_w32 width-pruned to" in selection.source_reason


def test_auto_lists_both_kinds_and_prefers_the_derived_student(
    digits_trajectory, tmp_path: Path, params_timed
) -> None:
    teacher, trajectory = digits_trajectory
    profile = write_profile(tmp_path / "p.toml", **{"budget.latency_ms": 5.0})
    selection = _selection(teacher, trajectory, profile, "auto", ["cifar_resnet"])
    sources = [r.source for r in selection.candidates]
    assert "pruned" in sources and "fresh" in sources
    assert is_derived(selection.chosen) and selection.to_dict()["student_source"] == "pruned"


def test_auto_falls_back_to_the_ladder_when_no_derived_step_fits(
    digits_trajectory, tmp_path: Path, params_timed
) -> None:
    teacher, full = digits_trajectory
    trajectory = dataclasses.replace(full, points=full.points[:3])  # lightly pruned steps only
    assert trajectory.points[-1].params > 50_000
    # the ladder's cifar_resnet8_w8 (~20k params, 0.2 ms) fits a 0.45 ms target; no step does
    profile = write_profile(tmp_path / "p.toml", **{"budget.latency_ms": 0.5})
    selection = _selection(teacher, trajectory, profile, "auto", ["cifar_resnet"])
    assert selection.chosen.startswith("cifar_resnet8") and selection.student_source == "fresh"
    assert "no derived student qualified" in selection.source_reason
    with pytest.raises(CompressorError, match=r"the fastest, cifar_resnet20_w32-pruned-") as err:
        _selection(teacher, trajectory, profile, "pruned", [])
    assert trajectory.points[-1].name in str(err.value) and "whole layers" in str(err.value)


def test_teachers_that_cannot_be_pruned_fall_back_or_refuse(teacher_path: Path, tmp_path) -> None:
    teacher = load_bundle(teacher_path)
    torch.jit.script(teacher.model).save(str(tmp_path / "ts.pt"))
    archive = load_bundle(tmp_path / "ts.pt")
    assert "torchscript archive" in unprunable_reason(archive)
    plan = plan_student_source("auto", archive, TINY_SHAPE)
    assert plan.trajectory is None and plan.reason.startswith("auto: the fresh ladder, because")
    with pytest.raises(CompressorError, match="--student-source pruned: cannot derive"):
        plan_student_source("pruned", archive, TINY_SHAPE)
    with pytest.raises(CompressorError, match="conflicts with --student-init"):
        plan_student_source("pruned", teacher, TINY_SHAPE, student_init=tmp_path)
    with pytest.raises(CompressorError, match="must be one of auto, pruned, fresh"):
        plan_student_source("biggest", teacher, TINY_SHAPE)
    assert plan_student_source("fresh", teacher, TINY_SHAPE).trajectory is None


# --- the CLI on a derived student --------------------------------------------------------------


def _run(teacher: Path, data: Path, profile: Path, out: Path, *extra: str):
    args = ["run", "--teacher", str(teacher), "--data", str(data), "--profile", str(profile),
            "--out", str(out), *FAST, *extra]  # fmt: skip
    return runner.invoke(app, args)


def test_cli_derived_run_distill_resume_inspect_verify(
    teacher_path: Path, small_digits_root: Path, tmp_path: Path, params_timed
) -> None:
    digits_root = small_digits_root  # plumbing, not accuracy: a third of the images
    out = tmp_path / "run"
    profile = write_profile(tmp_path / "p.toml", **{"budget.latency_ms": 1.0})
    result = _run(teacher_path, digits_root, profile, out, "--student-source", "pruned")
    assert result.exit_code in (0, 1), result.output
    report = json.loads((out / "report.json").read_text())
    selection = report["selection"]
    assert selection["student_source"] == "pruned" and is_derived(selection["chosen"])
    derived = selection["derived"]
    assert derived["bn_recalibration_images"] > 0
    assert 0.0 <= derived["val_top1_before_training"] <= 1.0
    assert report["distillation"]["train"]["lr"] == 0.005  # --pruned-lr's default, not --lr
    assert "Student source: **pruned**" in (out / "report.md").read_text()
    assert "Student source: <strong>pruned</strong>" in (out / "report.html").read_text()
    saved = torch.load(out / "student.pt", weights_only=True)
    assert saved["pruning"]["description"] == derived["description"]
    assert report["export"]["metadata"]["student_source"] == f"pruned: {derived['description']}"

    inspected = runner.invoke(app, ["inspect", str(out / "student.pt")])
    assert inspected.exit_code == 0
    assert json.loads(inspected.stdout)["pruning"]["description"] == derived["description"]

    verified = runner.invoke(app, [
        "verify", str(out / "student.onnx"), "--data", str(digits_root), "--profile",
        str(profile), "--reference", str(out / "student.pt"), "--json",
    ])  # fmt: skip
    assert verified.exit_code in (0, 1), verified.output
    assert json.loads(verified.stdout)["parity"]["top1_agreement"] >= 0.995

    selected = (out / "selection.json").read_text()
    again = runner.invoke(app, ["distill", "--out", str(out), "--epochs", "1", "--quiet"])
    assert again.exit_code == 0, again.output
    assert (out / "selection.json").read_text() == selected and (out / "derived_init.pt").is_file()
    resumed = runner.invoke(app, ["run", "--resume", "--out", str(out), "--json", "--quiet"])
    assert resumed.exit_code in (0, 1), resumed.output
    report = json.loads(resumed.stdout)
    assert report["resumed"]["stages_skipped"] == ["select", "distill"]
    assert report["selection"]["chosen"] == selection["chosen"]
    assert load_bundle(out / "student.pt").pruning is not None


def test_cli_pruned_that_cannot_fit_names_the_fastest_and_writes_nothing(
    teacher_path: Path, digits_root: Path, tmp_path: Path, params_timed
) -> None:
    out = tmp_path / "run"
    profile = write_profile(tmp_path / "p.toml", **{"budget.latency_ms": 0.001})
    result = _run(teacher_path, digits_root, profile, out, "--student-source", "pruned")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no derived student qualifies: the fastest, " in lines[0]
    assert not out.exists()


def test_cli_pruned_for_a_torchscript_teacher_is_one_line(
    teacher_path: Path, digits_root: Path, tmp_path: Path
) -> None:
    torch.jit.script(load_bundle(teacher_path).model).save(str(tmp_path / "ts.pt"))
    out = tmp_path / "run"
    profile = write_profile(tmp_path / "p.toml")
    result = _run(tmp_path / "ts.pt", digits_root, profile, out, "--student-source", "pruned")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "torchscript archive" in lines[0]
    assert not out.exists()
