"""--student-init: pretrained weights for the chosen student, head replaced, mismatches refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from compressor.cli.main import app
from compressor.errors import CompressorError
from compressor.models.checkpoint import save_bundle
from compressor.models.pretrained import (
    TORCHVISION,
    load_student_init,
    torchvision_cache_file,
    torchvision_weights,
)
from compressor.models.registry import build_model
from tests.conftest import write_profile
from tests.fakes import flat_stats

runner = CliRunner()
ARCH = "cifar_resnet8_w8"


def _pretrained(path: Path, classes: int = 5, arch: str = ARCH) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    state = build_model(arch, classes, 1).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return state


def test_weights_load_and_the_head_is_replaced_for_another_class_count(tmp_path: Path) -> None:
    source = _pretrained(tmp_path / "w.pt", classes=5)
    torch.manual_seed(0)
    model = build_model(ARCH, 10, 1)
    fresh_head = model.fc.weight.detach().clone()
    init = load_student_init(model, ARCH, tmp_path / "w.pt")
    assert init is not None and sorted(init.reinitialised) == ["fc.bias", "fc.weight"]
    assert init.loaded_tensors == len(source) - 2
    own = model.state_dict()
    for key, value in source.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert torch.equal(model.fc.weight, fresh_head) and model.fc.weight.shape[0] == 10


def test_same_class_count_loads_everything_from_a_bundle(tmp_path: Path) -> None:
    torch.manual_seed(3)
    trained = build_model(ARCH, 10, 1)
    save_bundle(tmp_path / "b.pt", trained, ARCH, num_classes=10, in_channels=1,
                input_size=(8, 8), mean=(0.5,), std=(0.5,), class_names=None)  # fmt: skip
    model = build_model(ARCH, 10, 1)
    init = load_student_init(model, ARCH, tmp_path / "b.pt")
    assert init is not None and init.reinitialised == []
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), trained.state_dict().values(), strict=True)
    )


def test_folder_is_used_only_for_candidates_that_have_weights(tmp_path: Path) -> None:
    _pretrained(tmp_path / f"{ARCH}.pt")
    assert load_student_init(build_model(ARCH, 10, 1), ARCH, tmp_path) is not None
    other = "cifar_resnet8_w16"
    assert load_student_init(build_model(other, 10, 1), other, tmp_path) is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: _pretrained(p, arch="cifar_resnet14_w16"), "does not match its architecture"),
        (lambda p: p.write_bytes(b"not a checkpoint"), "not a readable PyTorch checkpoint"),
        (lambda p: torch.save({"epoch": 3}, p), "no state dict found"),
    ],
)
def test_mismatched_or_broken_weights_are_one_clear_error(tmp_path: Path, make, message) -> None:
    make(tmp_path / "w.pt")
    with pytest.raises(CompressorError, match=message):
        load_student_init(build_model(ARCH, 10, 1), ARCH, tmp_path / "w.pt")


def _run_with_init(teacher: Path, data: Path, tmp_path: Path, out: Path):
    return runner.invoke(app, [
        "run", "--teacher", str(teacher), "--data", str(data),
        "--profile", str(write_profile(tmp_path / "p.toml")), "--out", str(out),
        "--candidates", ARCH, "--epochs", "1", "--quiet", "--student-init", str(tmp_path / "w.pt"),
    ])  # fmt: skip


def test_cli_refuses_mismatched_init_before_writing(
    teacher_path: Path, digits_root: Path, tmp_path: Path
) -> None:
    _pretrained(tmp_path / "w.pt", arch="cifar_resnet14_w16")
    out = tmp_path / "run"
    result = _run_with_init(teacher_path, digits_root, tmp_path, out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match its architecture" in lines[0]
    assert not out.exists()


def test_cli_run_reports_what_was_loaded(
    teacher_path: Path, small_digits_root: Path, tmp_path: Path
) -> None:
    _pretrained(tmp_path / "w.pt", classes=4)
    out = tmp_path / "run"
    result = _run_with_init(teacher_path, small_digits_root, tmp_path, out)
    assert result.exit_code in (0, 1), result.output
    init = json.loads((out / "report.json").read_text())["distillation"]["student_init"]
    assert init["path"] == str(tmp_path / "w.pt") and sorted(init["reinitialised"]) == [
        "fc.bias", "fc.weight"]  # fmt: skip
    assert "student initialisation: `" in (out / "report.md").read_text()


# --- --student-init torchvision: published weights through torchvision's cache ----------------


def test_torchvision_weights_come_from_the_cache_with_a_new_head(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision_weights("mobilenet_v3_small_x1.0")
    cached = torchvision_cache_file(weights)
    assert cached.parent == tmp_path / "torch" / "hub" / "checkpoints"
    torch.manual_seed(3)  # stands in for the published file: same keys and shapes, 1000 classes
    published = torchvision.models.mobilenet_v3_small(num_classes=1000).state_dict()
    cached.parent.mkdir(parents=True)
    torch.save(published, cached)
    model = build_model("mobilenet_v3_small_x1.0", 6, 3)
    init = load_student_init(model, "mobilenet_v3_small_x1.0", Path(TORCHVISION))
    assert init is not None and init.path == str(cached)
    assert sorted(init.reinitialised) == ["classifier.3.bias", "classifier.3.weight"]
    assert init.loaded_tensors == len(published) - 2
    own = model.state_dict()
    torch.testing.assert_close(own["features.0.0.weight"], published["features.0.0.weight"])
    assert own["classifier.3.weight"].shape == (6, 1024)


@pytest.fixture
def offline_empty_cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty TORCH_HOME and no network: torch.hub's download raises as offline it would."""
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "empty"


def test_torchvision_weights_offline_or_unpublished_are_one_error(
    tmp_path: Path, offline_empty_cache: Path
):
    with pytest.raises(CompressorError, match=r"not in the cache .* could not be downloaded"):
        load_student_init(build_model("resnet18", 6, 3), "resnet18", Path(TORCHVISION))
    assert not (tmp_path / "empty" / "hub" / "checkpoints" / "resnet18-f37072fd.pth").exists()
    with pytest.raises(CompressorError, match=r"no weights for mobilenet_v3_small_x0\.75"):
        load_student_init(
            build_model("mobilenet_v3_small_x0.75", 6, 3), "mobilenet_v3_small_x0.75",
            Path(TORCHVISION),
        )  # fmt: skip


def test_cli_torchvision_init_offline_stops_before_writing(
    digits_root: Path, tmp_path: Path, offline_empty_cache: Path, monkeypatch
) -> None:
    from compressor.models.registry import count_params
    from compressor.selection import choose as select
    from compressor.selection import sources

    # selection decided by parameter counts (resnet34 teacher ~2x resnet18), not by a clock
    monkeypatch.setattr(select, "onnx_bytes", lambda m, _s, _o: str(count_params(m)).encode())

    def timer_for(_profile):
        return lambda graph, _s: flat_stats(int(graph.decode()) / 1e5)

    monkeypatch.setattr(sources, "profile_timer", timer_for)
    monkeypatch.setattr(
        sources, "profile_pair_timer", lambda p: sources.pair_from_timer(timer_for(p))
    )
    torch.manual_seed(0)
    torch.save(build_model("resnet34", 10, 3).state_dict(), tmp_path / "teacher.pt")
    profile = write_profile(
        tmp_path / "p.toml", **{"input.shape": "[3, 32, 32]", "budget.latency_ms": 1000}
    )
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "run", "--teacher", str(tmp_path / "teacher.pt"), "--arch", "resnet34", "--data",
        str(digits_root), "--profile", str(profile), "--out", str(out), "--epochs", "1",
        "--family", "resnet", "--candidates", "resnet18", "--student-init", "torchvision",
        "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not in the cache" in lines[0], lines
    assert not out.exists()
