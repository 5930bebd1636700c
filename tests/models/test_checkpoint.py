from pathlib import Path

import pytest
import torch

from compressor.errors import CompressorError
from compressor.models.checkpoint import load_bundle, save_bundle
from compressor.models.registry import build_model


def _bundle(path: Path, arch: str = "cifar_resnet8_w8") -> torch.nn.Module:
    model = build_model(arch, 10, 1)
    save_bundle(
        path, model, arch, num_classes=10, in_channels=1, input_size=(8, 8),
        mean=(0.5,), std=(0.5,), class_names=[str(i) for i in range(10)],
    )  # fmt: skip
    return model


def test_bundle_round_trip_is_exact(tmp_path: Path) -> None:
    model = _bundle(tmp_path / "t.pt")
    loaded = load_bundle(tmp_path / "t.pt")
    assert (loaded.arch, loaded.num_classes, loaded.in_channels) == ("cifar_resnet8_w8", 10, 1)
    assert loaded.format == "bundle" and loaded.input_size == (8, 8)
    assert loaded.class_names == [str(i) for i in range(10)]
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model.eval()(x), loaded.model(x))
    assert len(loaded.sha256) == 64


def test_torchvision_state_dict_with_arch(tmp_path: Path) -> None:
    model = build_model("resnet18", 7, 3)
    torch.save(model.state_dict(), tmp_path / "r18.pt")
    loaded = load_bundle(tmp_path / "r18.pt", arch="resnet18")
    assert loaded.num_classes == 7 and loaded.in_channels == 3 and loaded.format == "state-dict"
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(model.eval()(x), loaded.model(x))


def test_training_script_dict_with_module_prefix(tmp_path: Path) -> None:
    model = build_model("cifar_resnet8_w8", 10, 1)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pt")
    loaded = load_bundle(tmp_path / "ckpt.pt", arch="cifar_resnet8_w8")
    assert loaded.num_classes == 10


def test_state_dict_without_arch_asks_for_it(tmp_path: Path) -> None:
    torch.save(build_model("cifar_resnet8_w8", 10, 1).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CompressorError, match="pass --arch"):
        load_bundle(tmp_path / "sd.pt")


def test_unknown_arch(tmp_path: Path) -> None:
    torch.save(build_model("cifar_resnet8_w8", 10, 1).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CompressorError, match="unknown architecture 'resnet9000'"):
        load_bundle(tmp_path / "sd.pt", arch="resnet9000")


def test_mismatched_state_dict_names_keys(tmp_path: Path) -> None:
    torch.save(build_model("cifar_resnet8_w8", 10, 1).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CompressorError) as info:
        load_bundle(tmp_path / "sd.pt", arch="cifar_resnet14_w16")
    text = str(info.value)
    assert "does not match" in text and ("missing keys" in text or "shape mismatch" in text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CompressorError, match="checkpoint not found"):
        load_bundle(tmp_path / "nope.pt")


def test_random_bytes_and_truncated(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(CompressorError, match="not a readable PyTorch checkpoint"):
        load_bundle(tmp_path / "junk.pt")
    _bundle(tmp_path / "t.pt")
    data = (tmp_path / "t.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CompressorError, match="not a readable PyTorch checkpoint"):
        load_bundle(tmp_path / "cut.pt")


class _Payload:
    """Unpickling this object would create a marker file (a stand-in for malicious code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path(self.marker),))


def test_pickle_with_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "evil": _Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CompressorError, match="--trust-checkpoint"):
        load_bundle(tmp_path / "evil.pt", arch="cifar_resnet8_w8")
    assert not marker.exists()


def test_pickled_module_loads_only_when_trusted(tmp_path: Path) -> None:
    torch.save(build_model("cifar_resnet8_w8", 10, 1), tmp_path / "module.pt")
    with pytest.raises(CompressorError, match="unpickling runs code"):
        load_bundle(tmp_path / "module.pt")
    loaded = load_bundle(tmp_path / "module.pt", trust_checkpoint=True)
    assert loaded.num_classes == 10 and loaded.format == "pickled-module"


def test_torchscript_teacher(tmp_path: Path) -> None:
    model = build_model("cifar_resnet8_w8", 10, 1).eval()
    torch.jit.script(model).save(str(tmp_path / "ts.pt"))
    loaded = load_bundle(tmp_path / "ts.pt")
    assert loaded.format == "torchscript" and loaded.num_classes == 10 and loaded.in_channels == 1
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(loaded.model(x), model(x), atol=1e-6)


def test_torch_export_teacher_needs_dynamic_batch(tmp_path: Path) -> None:
    model = build_model("cifar_resnet8_w8", 10, 1).eval()
    x = torch.randn(2, 1, 8, 8)
    dynamic = torch.export.export(
        model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},)
    )
    torch.export.save(dynamic, str(tmp_path / "dyn.pt2"))
    loaded = load_bundle(tmp_path / "dyn.pt2")
    assert loaded.format == "torch-export" and loaded.input_size == (8, 8)
    loaded.model.eval()  # must be accepted even though exported graphs refuse eval()
    assert torch.allclose(loaded.model(torch.cat([x, x])), model(torch.cat([x, x])), atol=1e-5)
    torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "static.pt2"))
    with pytest.raises(CompressorError, match="fixed batch size of 2"):
        load_bundle(tmp_path / "static.pt2")


def test_timm_state_dict_with_arch(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=5)
    torch.save({"model": model.state_dict()}, tmp_path / "timm.pt")
    loaded = load_bundle(tmp_path / "timm.pt", arch="timm:resnet10t")
    assert loaded.num_classes == 5 and loaded.in_channels == 3
