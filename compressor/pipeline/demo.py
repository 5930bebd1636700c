"""The embedded demo: real handwritten digits shipped with scikit-learn, no network needed.

``build_digits_imagefolder`` writes the 1,797 8x8 digit images (UCI optical recognition of
handwritten digits, bundled in scikit-learn) as PNG files in an ImageFolder tree, so the demo
exercises exactly the loading path a user's own data takes. ``train_demo_teacher`` trains a
teacher on it and saves it in the bundle format; ``demo_run_config`` is the run ``compressor
demo`` starts. The one recipe (:func:`demo_train_config`) serves teacher and student.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from compressor.config.loss import LossConfig
from compressor.config.run import RunConfig
from compressor.config.train import TrainConfig
from compressor.data.splits import load_image_folder, stratified_split
from compressor.models.checkpoint import save_bundle
from compressor.models.registry import build_model
from compressor.train.loop import distill

DEMO_TEACHER_ARCH = "cifar_resnet20_w32"
DEMO_INPUT = (1, 16, 16)
DEMO_MEAN = (0.5,)
DEMO_STD = (0.5,)
DEMO_PROFILE = "demo"


def demo_train_config(epochs: int, seed: int, device: str | None = None) -> TrainConfig:
    """The digits' recipe for teacher and student alike: no flips (a mirrored 2 is no 2)."""
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.1, seed=seed, hflip=False)
    return replace(cfg, device=device) if device else cfg


def demo_run_config(out: Path, data: Path, teacher: Path, epochs: int, seed: int) -> RunConfig:
    """The run ``compressor demo`` starts on the digits (its folder is overwritten)."""
    return RunConfig(
        teacher=teacher,
        data=data,
        profile=DEMO_PROFILE,
        out=out / "run",
        train=demo_train_config(epochs, seed),
        overwrite=True,
    )


def build_digits_imagefolder(root: Path, test_fraction: float = 0.25, seed: int = 0) -> Path:
    """Write ``root/{train,test}/<digit>/<n>.png`` from scikit-learn's digits; idempotent."""
    from sklearn.datasets import load_digits

    root = Path(root)
    marker = root / ".complete"
    if marker.exists():
        return root
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    labels = torch.as_tensor(digits.target)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    for split, index in (("train", train_idx), ("test", test_idx)):
        for i in index.tolist():
            folder = root / split / str(int(labels[i]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(folder / f"{i:04d}.png")
    marker.write_text("sklearn.datasets.load_digits\n")
    return root


def train_demo_teacher(data_root: Path, path: Path, epochs: int = 12, seed: int = 0) -> Path:
    """Train the demo teacher with plain cross-entropy and save it as a bundle."""
    data = load_image_folder(data_root, DEMO_INPUT, seed=seed)
    torch.manual_seed(seed)
    model = build_model(DEMO_TEACHER_ARCH, len(data.class_names), DEMO_INPUT[0])
    result = distill(
        None,
        model,
        data,
        DEMO_MEAN,
        DEMO_STD,
        LossConfig(method="ce", bias_aware=False),
        demo_train_config(epochs, seed, device="cpu"),
    )
    return save_bundle(
        path,
        result.student,
        DEMO_TEACHER_ARCH,
        num_classes=len(data.class_names),
        in_channels=DEMO_INPUT[0],
        input_size=DEMO_INPUT[1:],
        mean=DEMO_MEAN,
        std=DEMO_STD,
        class_names=data.class_names,
        extra={"trained_by": "compressor demo", "val_top1": result.best_val_top1},
    )
