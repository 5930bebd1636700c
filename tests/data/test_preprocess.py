"""The eval transform is the teacher's: compressor must see exactly what torchvision shows it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T

from compressor.compute.inference import predict_logits, top1
from compressor.data.preprocess import Preprocess, resolve_preprocess
from compressor.data.splits import load_image_folder, normalize
from compressor.errors import CompressorError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZES = [(200, 150), (150, 200), (97, 131), (64, 64), (300, 80)]  # (width, height), non-square


def _photo_folder(root: Path, per_class: int = 6) -> Path:
    """train/ and test/ trees of non-square RGB images with structure (not flat noise)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in range(3):
            folder = root / split / f"class{cls}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                w, h = SIZES[(i + cls) % len(SIZES)]
                yy, xx = np.mgrid[0:h, 0:w]
                base = np.stack([xx * (cls + 1) % 255, yy * 3 % 255, (xx + yy) % 255], -1)
                noise = rng.integers(0, 60, (h, w, 3))
                img = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.jpg", quality=92)
    return root


def _spec(size: int, mode: str = "center-crop", **kw: object) -> Preprocess:
    return resolve_preprocess((size, size), 3, MEAN, STD, {"resize_mode": mode, **kw})


@pytest.mark.parametrize(
    ("mode", "tv"),
    [
        ("center-crop", [T.Resize(73), T.CenterCrop(64)]),
        ("squash", [T.Resize((64, 64))]),
    ],
)
def test_decoded_pixels_equal_torchvision_transforms(tmp_path: Path, mode: str, tv: list) -> None:
    root = _photo_folder(tmp_path / "data")
    splits = load_image_folder(root, (3, 64, 64), preprocess=_spec(64, mode))
    reference = T.Compose([*tv, T.PILToTensor()])
    files = sorted((root / "test").rglob("*.jpg"))
    expected = torch.stack([reference(Image.open(f).convert("RGB")) for f in files])
    assert splits.preprocess is not None and splits.preprocess.resolved_resize == 73
    assert torch.equal(splits.test.images, expected)


def test_reported_top1_equals_torchvision_eval_image_by_image(tmp_path: Path) -> None:
    """Acceptance: a torchvision model scored through compressor's path and through
    torchvision.transforms (Resize + CenterCrop + Normalize) gives the same prediction on
    every image, so the same top-1."""
    root = _photo_folder(tmp_path / "data", per_class=8)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    splits = load_image_folder(root, (3, 64, 64), preprocess=_spec(64))
    ours = predict_logits(model, splits.test.images, MEAN, STD, torch.device("cpu"))

    ds = torchvision.datasets.ImageFolder(
        str(root / "test"),
        T.Compose([T.Resize(73), T.CenterCrop(64), T.ToTensor(), T.Normalize(MEAN, STD)]),
    )
    with torch.no_grad():
        theirs = torch.cat([model(x) for x, _ in torch.utils.data.DataLoader(ds, batch_size=8)])
    labels = torch.tensor(ds.targets)
    assert torch.equal(splits.test.labels, labels)
    assert torch.equal(ours.argmax(1), theirs.argmax(1))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert top1(ours, labels) == top1(theirs, labels)
    # and the squashed input the old code used is a different input
    squashed = load_image_folder(root, (3, 64, 64), preprocess=_spec(64, "squash"))
    assert not torch.equal(squashed.test.images, splits.test.images)


def test_letterbox_keeps_aspect_and_pads_with_the_mean(tmp_path: Path) -> None:
    spec = _spec(64, "letterbox")
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    out = spec.apply(wide)
    assert out.shape == (3, 64, 64)
    pad = [round(255 * m) for m in MEAN]
    assert list(out[:, 0, 0]) == pad and list(out[:, 63, 63]) == pad  # top/bottom bands
    assert list(out[:, 32, 32]) == [255, 0, 0]  # the image itself, centred
    rows = np.where((out[0] == 255).all(axis=1))[0]
    assert len(rows) == 32  # 200x100 scaled to 64x32 keeps 2:1


def test_metadata_round_trip_and_description() -> None:
    spec = _spec(224, interpolation="bicubic")
    meta = spec.to_metadata()
    assert meta["resize_size"] == 256 and meta["description"].startswith("Resize(shorter side 256")
    # read back as verify does: the recorded layer of resolve_preprocess
    back = resolve_preprocess((224, 224), 3, MEAN, STD, None, json.loads(json.dumps(meta)))
    assert back.describe() == spec.describe() and back.cache_tag() == spec.cache_tag()
    assert back.resolved_resize == 256 and back.interpolation == "bicubic"


def test_resolution_order_cli_then_bundle_then_profile() -> None:
    cli = {"resize_mode": None, "resize_size": 300, "interpolation": None}
    bundle = {"resize_mode": "squash", "resize_size": 256, "interpolation": "bicubic"}
    profile = {"resize_mode": "letterbox", "resize_size": 0, "interpolation": "nearest"}
    spec = resolve_preprocess((224, 224), 3, MEAN, STD, cli, bundle, profile)
    assert (spec.resize_mode, spec.resize_size, spec.interpolation) == ("squash", 300, "bicubic")
    default = resolve_preprocess((224, 224), 3, MEAN, STD, {"resize_mode": "auto"}, None)
    assert default.resize_mode == "center-crop" and default.resolved_resize == 256
    small = resolve_preprocess((32, 32), 3, MEAN, STD)
    assert small.resize_mode == "squash"  # CIFAR-sized data is used whole


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"resize_mode": "stretch"}, "unknown resize mode 'stretch'"),
        ({"interpolation": "lanczos9"}, "unknown interpolation"),
        ({"resize_size": 200}, "cannot produce the 224x224 input"),
    ],
)
def test_impossible_specs_are_one_clear_error(layer: dict, message: str) -> None:
    with pytest.raises(CompressorError, match=message):
        resolve_preprocess((224, 224), 3, MEAN, STD, layer)


def test_normalisation_matches_torchvision_normalize() -> None:
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    expected = T.Normalize(MEAN, STD)(images.float() / 255)
    torch.testing.assert_close(normalize(images, MEAN, STD), expected)


def test_verify_reads_the_transform_from_the_onnx_metadata(tmp_path: Path) -> None:
    """`compressor verify` on an exported file feeds it the way it was trained, without flags."""
    from compressor.models.checkpoint import save_bundle
    from compressor.models.registry import build_model
    from compressor.pipeline.single_stage import export_student, verify_model
    from tests.conftest import write_profile

    root = _photo_folder(tmp_path / "data", per_class=8)
    torch.manual_seed(0)
    model = build_model("cifar_resnet8_w8", 3).eval()
    spec = _spec(64)
    save_bundle(tmp_path / "s.pt", model, "cifar_resnet8_w8", num_classes=3, in_channels=3,
                input_size=(64, 64), mean=MEAN, std=STD, class_names=["class0", "class1", "class2"],
                preprocess=spec.to_metadata())  # fmt: skip
    export_student(tmp_path / "s.pt", tmp_path / "s.onnx", opset=18)
    profile = write_profile(tmp_path / "p.toml", **{"input.shape": "[3, 64, 64]"})
    outcome = verify_model(tmp_path / "s.onnx", root, str(profile))
    assert outcome.result["preprocess"]["resize_mode"] == "center-crop"
    assert outcome.result["preprocess"]["resize_size"] == 73

    ds = torchvision.datasets.ImageFolder(
        str(root / "test"),
        T.Compose([T.Resize(73), T.CenterCrop(64), T.ToTensor(), T.Normalize(MEAN, STD)]),
    )
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in torch.utils.data.DataLoader(ds, batch_size=8)])
    assert outcome.result["student_top1"] == pytest.approx(top1(logits, torch.tensor(ds.targets)))
    flags = {"resize_mode": "squash"}
    squashed = verify_model(tmp_path / "s.onnx", root, str(profile), preprocess=flags)
    assert squashed.result["preprocess"]["resize_mode"] == "squash"
