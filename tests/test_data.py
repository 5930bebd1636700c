from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compressor.data import augment, load_image_folder, normalize, stratified_split
from compressor.errors import CompressorError


def _tree(root: Path, classes: int = 3, per_class: int = 10, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            shape = (12, 12, 3) if mode == "RGB" else (12, 12)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(
                folder / f"{i}.png"
            )
    return root


def test_train_test_layout_uses_test_folder(digits_splits) -> None:
    data = digits_splits
    assert data.test_source == "test/"
    assert data.class_names == [str(i) for i in range(10)]
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (1, 8, 8)
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert abs(len(data.val) / (len(data.train) + len(data.val)) - 0.1) < 0.02


def test_flat_layout_gets_seeded_held_out_test_split(tmp_path: Path) -> None:
    root = _tree(tmp_path / "flat", classes=3, per_class=20)
    a = load_image_folder(root, (3, 8, 8), seed=1)
    b = load_image_folder(root, (3, 8, 8), seed=1)
    assert a.test_source.startswith("held-out split")
    assert len(a.test) == 12 and torch.equal(a.test.images, b.test.images)
    assert a.train.images.shape[1:] == (3, 8, 8)  # resized from 12x12


def test_stratified_split_is_disjoint_and_per_class() -> None:
    labels = torch.tensor([0] * 10 + [1] * 20)
    rest, held = stratified_split(labels, 0.2, seed=3)
    assert set(rest.tolist()).isdisjoint(held.tolist())
    assert len(rest) + len(held) == 30
    assert torch.bincount(labels[held]).tolist() == [2, 4]


def test_broken_and_non_image_files_are_skipped_and_counted(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", classes=2, per_class=10)
    (root / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "class1" / "notes.txt").write_text("not an image")
    data = load_image_folder(root, (3, 8, 8))
    assert len(data.skipped) == 2
    assert len(data.train) + len(data.val) + len(data.test) == 20


def test_grayscale_images_convert_to_rgb_profile(tmp_path: Path) -> None:
    root = _tree(tmp_path / "g", classes=2, per_class=5, mode="L")
    data = load_image_folder(root, (3, 8, 8))
    assert data.train.images.shape[1] == 3


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: None, "data folder not found"),
        (lambda r: r.mkdir(), "has no class sub-folders"),
        (lambda r: (r / "a").mkdir(parents=True), "empty class folder"),
    ],
)
def test_bad_data_folders(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(CompressorError, match=message):
        load_image_folder(root, (3, 8, 8))


def test_folder_with_only_broken_files(tmp_path: Path) -> None:
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "x.png").write_text("nope")
    with pytest.raises(CompressorError, match="no readable images"):
        load_image_folder(tmp_path / "d", (3, 8, 8))


def test_augment_keeps_shape_and_content_range() -> None:
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    same = augment(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)


def test_normalize() -> None:
    images = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(normalize(images, (0.5,), (0.5,)), torch.ones(1, 1, 2, 2))
