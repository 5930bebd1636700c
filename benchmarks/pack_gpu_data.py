"""Build ``.gpu_data/gpu_data.tar.gz``: everything ``benchmarks/gpu_check.sh`` needs that a bare
GPU machine (no network, no ``../shared``) does not have. One command, run here beforehand::

    python benchmarks/pack_gpu_data.py    # 86 min on 2 shared CPU cores, nearly all the teacher

The archive holds

* ``cifar10/{train,test}/<class>/*.jpg``: a fixed CIFAR-10 subset (the first ``--train`` and
  ``--test`` files of each class in sorted order) from the shared JPEG copy, with its
  PROVENANCE.md;
* ``teacher/cifar_resnet20_w32.pt``: a ``cifar_resnet20_w32`` teacher trained here on the CPU
  (cross-entropy, ``--teacher-epochs`` epochs on the packed training images, 10% of them held
  out for validation), saved with :func:`compressor.models.checkpoint.save_bundle` (loads with
  ``weights_only=True``); its top-1 on the packed test images is in MANIFEST.json;
* ``wheels/*.whl``: the pure-Python wheels of what the project needs and the GPU machine lacks
  (``torch-pruning==1.6.1``, the project pins ``>=1.6.1,<1.7``), from ``pip download`` or from
  ``--wheels`` (a folder that already holds them); the check installs them offline with
  ``pip install --no-index --no-deps --target`` and puts that folder on PYTHONPATH.

No digits (the GPU machine has scikit-learn, the tests build them there) and no pytest (the
GPU machine has it). The archive is git-ignored and travels as the carried path ``.gpu_data``;
it must stay well under the 64 MiB a device call carries (defaults: 10.6 MiB, measured).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
TEACHER = "cifar_resnet20_w32"
WHEELS = ("torch-pruning==1.6.1",)  # pure Python; the GPU machine lacks them
LIMIT_BYTES = 50 * 1024 * 1024


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, path: Path, name: str) -> None:
    info = tar.gettarinfo(str(path), arcname=name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    with path.open("rb") as handle:
        tar.addfile(info, handle)


def _pick(data: Path, per_class: dict[str, int]) -> dict[str, list[tuple[Path, int]]]:
    """The first ``n`` files of each class (sorted), as (path, class index) per split."""
    picked = {}
    for split, n in per_class.items():
        classes = sorted(p for p in (data / split).iterdir() if p.is_dir())
        if len(classes) != 10:
            sys.exit(f"{data / split}: expected 10 class folders, found {len(classes)}")
        rows = []
        for index, folder in enumerate(classes):
            files = sorted(folder.glob("*.jpg"))[:n]
            if len(files) < n:
                sys.exit(f"{folder}: only {len(files)} images, {n} wanted")
            rows += [(f, index) for f in files]
        picked[split] = rows
    return picked


def _train_teacher(
    picked: dict[str, list[tuple[Path, int]]], classes: list[str], epochs: int, out: Path
) -> dict[str, object]:
    """Train the teacher on the packed training images (CPU) and save it as a bundle."""
    import torch

    from compressor.compute.inference import predict_logits, top1
    from compressor.data.splits import DatasetSplits, decode_images, stratified_split
    from compressor.losses.total import LossConfig
    from compressor.models.checkpoint import load_bundle, save_bundle
    from compressor.models.registry import build_model
    from compressor.train.loop import TrainConfig, distill

    began = time.perf_counter()
    full, _ = decode_images(picked["train"], 3, (32, 32))
    test, _ = decode_images(picked["test"], 3, (32, 32))
    train_idx, val_idx = stratified_split(full.labels, 0.1, 0)
    splits = DatasetSplits(
        full.subset(train_idx), full.subset(val_idx), test, classes, "packed", "test/"
    )
    torch.manual_seed(0)
    model = build_model(TEACHER, 10, 3)
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=0.1, device="cpu", seed=0)
    ce = LossConfig(method="ce", bias_aware=False)

    def log(row: dict) -> None:
        print(f"  teacher epoch: {json.dumps(row, default=str)[:160]}", flush=True)

    result = distill(None, model, splits, MEAN, STD, ce, cfg, on_epoch=log)
    test_top1 = top1(predict_logits(result.student, test, MEAN, STD), test.labels)
    record = {
        "arch": TEACHER,
        "epochs": epochs,
        "train_images": len(splits.train),
        "val_images": len(splits.val),
        "best_epoch": result.best_epoch,
        "val_top1": result.best_val_top1,
        "test_top1": test_top1,
        "test_images": len(test),
        "train_seconds_cpu": round(time.perf_counter() - began, 1),
    }
    save_bundle(
        out, result.student, TEACHER, num_classes=10, in_channels=3, input_size=(32, 32),
        mean=MEAN, std=STD, class_names=classes, extra={"pack_gpu_data": record},
    )  # fmt: skip
    load_bundle(out)  # the check loads it this way (weights_only=True): fail here, not there
    return record


def _wheels(given: Path | None, dest: Path) -> list[Path]:
    """The wheels of WHEELS, from ``given`` or downloaded with pip into ``dest``."""
    if given is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--quiet", "-d", str(dest), *WHEELS],
            check=True,
        )  # fmt: skip
        given = dest
    found = []
    for spec in WHEELS:
        name, version = spec.split("==")
        stem = f"{name.replace('-', '_')}-{version}-"
        wheels = sorted(given.glob(f"{stem}*.whl"))
        if not wheels:
            sys.exit(f"no wheel {stem}*.whl in {given}")
        if not wheels[0].name.endswith("-py3-none-any.whl"):
            sys.exit(f"{wheels[0].name} is not a pure-Python wheel")
        found.append(wheels[0])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/cifar10")
    parser.add_argument("--train", type=int, default=2000, help="training images per class")
    parser.add_argument("--test", type=int, default=200, help="test images per class")
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--wheels", type=Path, help="folder holding the wheels (else pip)")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu_data" / "gpu_data.tar.gz")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    picked = _pick(args.data, {"train": args.train, "test": args.test})
    classes = sorted(p.name for p in (args.data / "train").iterdir() if p.is_dir())
    tmp = args.out.with_suffix(".partial")
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(tmp, "w:gz") as tar:
        wheels = _wheels(args.wheels, Path(scratch))
        print(f"training the teacher ({args.teacher_epochs} epochs on the CPU) ...", flush=True)
        bundle = Path(scratch) / f"{TEACHER}.pt"
        teacher = _train_teacher(picked, classes, args.teacher_epochs, bundle)
        for split, rows in picked.items():
            for path, index in rows:
                _add_file(tar, path, f"cifar10/{split}/{classes[index]}/{path.name}")
        provenance = args.data / "PROVENANCE.md"
        if provenance.is_file():
            _add_file(tar, provenance, "cifar10/PROVENANCE.md")
        _add_file(tar, bundle, f"teacher/{bundle.name}")
        for wheel in wheels:
            _add_file(tar, wheel, f"wheels/{wheel.name}")
        manifest = {
            "cifar10": {split: len(rows) for split, rows in picked.items()},
            "teacher": {"path": f"teacher/{bundle.name}", **teacher},
            "wheels": [w.name for w in wheels],
            "command": "python " + " ".join(sys.argv),
        }
        _add_bytes(tar, "MANIFEST.json", json.dumps(manifest, indent=2).encode())
    size = tmp.stat().st_size
    if size > LIMIT_BYTES:
        tmp.unlink()
        sys.exit(f"archive is {size / 2**20:.1f} MiB, over the 50 MiB limit: lower --train")
    tmp.replace(args.out)
    print(
        f"wrote {args.out} ({size / 2**20:.1f} MiB, {time.perf_counter() - began:.0f} s): "
        f"{json.dumps(manifest)}"
    )


if __name__ == "__main__":
    main()
