"""End-to-end 224-px case: a torchvision teacher trained with its own preprocessing on
non-square photos, compressed with the README's `compressor run` command.

What it shows (docs/preprocessing.md):
  * the teacher's top-1 under its own eval transform (torchvision.transforms, computed here
    independently) vs as compressor reports it (must be equal), and vs the old squash resize;
  * teacher vs student p90 and measured speedup, budget use, student top-1, wall time, peak RSS.

Data: a 6-class subset of CIFAR-10 (../shared/datasets/cifar10, real photos), each image
upscaled to 200x150 (4:3, non-square) and saved as JPEG: 250 train + 100 test images per class.
Teacher: torchvision mobilenet_v3_small trained from scratch at 224 px with torchvision's
standard classification preprocessing (train Resize(256) + RandomCrop(224) + flip, eval
Resize(256) + CenterCrop(224), ImageNet mean/std), saved as a plain state dict.

    python benchmarks/photo224.py --work /tmp/photo224 [--teacher-epochs 8] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torchvision import transforms as T

CLASSES = ("airplane", "automobile", "bird", "cat", "ship", "truck")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
REPO = Path(__file__).resolve().parents[1]


def build_photos(src: Path, dst: Path, train_per_class: int, test_per_class: int) -> Path:
    """Upscale CIFAR images to 200x150 JPEGs in dst/{train,test}/<class>/ (idempotent)."""
    if (dst / ".complete").exists():
        return dst
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in CLASSES:
            files = sorted((src / split / name).glob("*.jpg"))[:count]
            out = dst / split / name
            out.mkdir(parents=True, exist_ok=True)
            for f in files:
                with Image.open(f) as im:
                    im.convert("RGB").resize((200, 150), Image.Resampling.BICUBIC).save(
                        out / f.name, quality=90
                    )
    (dst / ".complete").write_text("ok\n")
    return dst


def train_teacher(
    data: Path, path: Path, epochs: int, seed: int = 0, arch: str = "mobilenet_v3_small"
) -> None:
    """A torchvision ``arch`` (default mobilenet_v3_small) trained with torchvision's
    reference-style preprocessing."""
    if path.exists():
        return
    torch.manual_seed(seed)
    train_tf = T.Compose(
        [T.Resize(256), T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
         T.Normalize(MEAN, STD)]
    )  # fmt: skip
    ds = torchvision.datasets.ImageFolder(str(data / "train"), train_tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, num_workers=2)
    model = getattr(torchvision.models, arch)(num_classes=len(CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        seen, correct, began = 0, 0, time.perf_counter()
        for x, y in loader:
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
            correct += int((out.argmax(1) == y).sum())
        print(f"teacher epoch {epoch + 1}: train top-1 {correct / seen:.3f} "
              f"({time.perf_counter() - began:.0f} s)", flush=True)  # fmt: skip
    precise_batchnorm(model, data)
    torch.save(model.state_dict(), path)


@torch.no_grad()
def precise_batchnorm(model: torch.nn.Module, data: Path) -> None:
    """Recompute BatchNorm statistics over the training images (eval transform).

    MobileNetV3's BatchNorm momentum is 0.01: after a few hundred steps its running statistics
    are still near their initial values and the model predicts one class in eval mode (seen
    here: 16.7% = chance on 6 classes before this pass). Standard practice for short schedules.
    """
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])
    ds = torchvision.datasets.ImageFolder(str(data / "train"), tf)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in layers]  # 0.01 in MobileNetV3, 0.1 in ResNet
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    for x, _ in torch.utils.data.DataLoader(ds, batch_size=64, num_workers=2):
        model(x)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    model.eval()


@torch.no_grad()
def torchvision_top1(
    data: Path, weights: Path, squash: bool = False, arch: str = "mobilenet_v3_small"
) -> float:
    """The teacher's test top-1 computed with torchvision.transforms, independently of us."""
    resize = [T.Resize((224, 224))] if squash else [T.Resize(256), T.CenterCrop(224)]
    tf = T.Compose([*resize, T.ToTensor(), T.Normalize(MEAN, STD)])
    ds = torchvision.datasets.ImageFolder(str(data / "test"), tf)
    model = getattr(torchvision.models, arch)(num_classes=len(CLASSES))
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    correct = 0
    for x, y in torch.utils.data.DataLoader(ds, batch_size=100):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(ds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cifar", type=Path, default=REPO.parent / "shared/datasets/cifar10")
    parser.add_argument("--work", type=Path, default=Path("/tmp/photo224"))
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--profile", default="mobile-224")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = build_photos(args.cifar, args.work / "data", 250, 100)
    weights = args.work / "teacher.pt"
    began = time.perf_counter()
    train_teacher(data, weights, args.teacher_epochs)
    print(f"teacher ready ({time.perf_counter() - began:.0f} s)", flush=True)
    center = torchvision_top1(data, weights)
    squash = torchvision_top1(data, weights, squash=True)
    out = args.work / "run"
    cmd = [
        sys.executable, "-m", "compressor", "run", "--teacher", str(weights),
        "--arch", "mobilenet_v3_small", "--data", str(data), "--profile", args.profile,
        "--out", str(out), "--epochs", str(args.epochs), "--overwrite", "--no-data-cache",
    ]  # fmt: skip
    print("$ " + " ".join(cmd), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, check=False)
    wall = time.perf_counter() - started
    rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    report = json.loads((out / "report.json").read_text())
    sel, speed, acc = report["selection"], report["speedup"], report["accuracy"]
    shipped = report["shipped"]["latency"]
    rows = {
        "exit code": proc.returncode,
        "teacher top-1, torchvision eval transform (independent)": f"{100 * center:.2f}%",
        "teacher top-1 as compressor reports it": f"{100 * acc['teacher_top1']:.2f}%",
        "teacher top-1 with the old squash resize": f"{100 * squash:.2f}%",
        "student": f"{sel['chosen']} (family {sel['family']})",
        "student top-1": f"{100 * acc['student_top1']:.2f}%",
        "teacher p90 (alternating)": f"{speed.get('teacher_ms', float('nan')):.3f} ms",
        "student p90 (alternating)": f"{speed.get('student_ms', float('nan')):.3f} ms",
        "measured speedup": f"{speed.get('speedup', float('nan')):.2f}x",
        "param ratio": f"{report['size']['param_ratio']:.2f}x",
        "budget utilisation (shipped p90 / budget)": (
            f"{100 * shipped['at_percentile_ms'] / report['profile']['latency_ms']:.1f}%"
        ),
        "best validation epoch / val top-1": (
            f"{report['distillation']['best_epoch']} / "
            f"{100 * report['distillation']['best_val_top1']:.2f}%"
        ),
        "val top-1 per epoch": ", ".join(
            f"{100 * r['val_top1']:.1f}" for r in report["distillation"]["history"]
        ),
        "wall time of compressor run": f"{wall:.0f} s",
        "peak RSS of compressor run": f"{rss_gib:.2f} GiB",
    }
    print(f"\ncpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"torch {torch.__version__}")  # fmt: skip
    print("| measure | value |\n| --- | --- |")
    for key, value in rows.items():
        print(f"| {key} | {value} |")


if __name__ == "__main__":
    main()
