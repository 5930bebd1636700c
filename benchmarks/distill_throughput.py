"""Distillation speed: compressor's own training loop vs a plain reference loop, in one run.

Reference (the usual way): torchvision ImageFolder + DataLoader (per-sample PIL decode,
RandomCrop + HorizontalFlip + ToTensor + Normalize), fp32, NCHW, teacher forward every step,
Hinton KD, SGD with a per-step cosine schedule. compressor: ``compressor.train.loop.distill``
itself (no re-implementation), with whatever it does on the device: images decoded once into a
uint8 tensor (from the disk cache when current), crop and flip batched on the device, a
batch-norm-folded channels-last teacher, bf16 autocast + fused SGD on CUDA. Same images,
teacher, student, batch size, loss (KD, lambda 0.5, T 4) and optimiser settings.

Part 1, images per second: whole epochs over the same training subset, median over epochs after
the first (which pays start-up), the loops interleaved per repeat so machine noise hits both.
compressor's epochs include its validation pass, so its figure is conservative.

Part 2, time to accuracy: a teacher is trained first (compressor, CE), then each loop distils
a fresh student for ``--tta-epochs`` epochs; after every epoch the student's test top-1 is
measured (not timed). The time to reach ``--target`` includes each loop's start-up (DataLoader
workers; teacher statistics and folding), not the evaluation.

    python benchmarks/distill_throughput.py --preset cpu    # about 25 min on 2 cores
    python benchmarks/distill_throughput.py --preset gpu    # a few minutes on one H100/H200
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision import transforms

from compressor.compute.inference import predict_logits, resolve_device, top1
from compressor.data.splits import DatasetSplits, decode_images, scan_image_folder
from compressor.files import default_cache_dir
from compressor.losses.methods.kd import kd_per_sample
from compressor.losses.total import LossConfig
from compressor.models.registry import build_model
from compressor.report.provenance import hardware, versions
from compressor.train.loop import TrainConfig, distill

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
KD = LossConfig(method="kd", bias_aware=False, ce_weight=0.5, temperature=4.0)
PRESETS = {  # subset, test images, epochs per throughput repeat, teacher / tta epochs, target
    "cpu": dict(subset=5000, test=2000, epochs=3, teacher_epochs=15, tta_epochs=10, target=0.40),
    "gpu": dict(subset=45000, test=10000, epochs=4, teacher_epochs=30, tta_epochs=15, target=0.75),
}


@dataclass
class Curve:
    """Per-epoch training seconds (evaluation excluded) and test top-1 of one loop."""

    images_per_epoch: int
    seconds: list[float] = field(default_factory=list)
    test_top1: list[float] = field(default_factory=list)
    startup: float = 0.0
    compile_mode: object = None  # compressor loops: what compile=None/False/True became

    def images_per_second(self) -> float:
        steady = self.seconds[1:] or self.seconds
        return self.images_per_epoch / statistics.median(steady)

    def time_to(self, target: float) -> tuple[float, int] | None:
        for epoch, acc in enumerate(self.test_top1):
            if acc >= target:
                return self.startup + sum(self.seconds[: epoch + 1]), epoch + 1
        return None


@dataclass
class Bench:
    args: argparse.Namespace
    device: torch.device
    samples: list[tuple[Path, int]]  # the training subset, the same files for both loops
    splits: DatasetSplits  # compressor's view of those files (train), plus val and test


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _evaluate(model: nn.Module, bench: Bench) -> float:
    test = bench.splits.test
    return top1(predict_logits(model, test.images, MEAN, STD, bench.device), test.labels)


def reference_loop(
    bench: Bench, teacher: nn.Module, student: nn.Module, epochs: int, evaluate: bool
) -> Curve:
    """The usual loop: ImageFolder + DataLoader workers, fp32, teacher every step."""
    args, device = bench.args, bench.device
    began = time.perf_counter()
    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    dataset = torchvision.datasets.ImageFolder(f"{args.data}/train", transform=tf)
    index = {path: i for i, (path, _) in enumerate(dataset.samples)}
    subset = torch.utils.data.Subset(dataset, [index[str(p)] for p, _ in bench.samples])
    loader = torch.utils.data.DataLoader(
        subset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
    )  # fmt: skip
    teacher, student = teacher.to(device).eval(), student.to(device)
    optimizer = torch.optim.SGD(
        student.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    total = epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total))
    )
    curve = Curve(len(subset), startup=time.perf_counter() - began)
    for _ in range(epochs):
        student.train()
        _sync(device)
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = student(x)
            ce = nn.functional.cross_entropy(s_logits, y)
            loss = 0.5 * ce + 0.5 * kd_per_sample(s_logits, t_logits, 4.0).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        _sync(device)
        curve.seconds.append(time.perf_counter() - start)
        if evaluate:
            curve.test_top1.append(_evaluate(student, bench))
    return curve


def compressor_loop(
    bench: Bench, teacher: nn.Module, student: nn.Module, epochs: int, evaluate: bool,
    compile_step: bool | None = None, channels_last: bool | None = None,
) -> Curve:  # fmt: skip
    """``compressor.train.loop.distill`` as the CLI runs it; evaluation is taken off the clock
    (each epoch's time is distill's own, measured before ``on_epoch`` runs). ``compile_step``
    is ``TrainConfig.compile``: None (the default) lets compressor choose (CUDA graphs through
    torch.compile "reduce-overhead" on CUDA with static shapes, eager on CPU)."""
    args = bench.args
    curve = Curve(len(bench.splits.train))
    began = time.perf_counter()

    def on_epoch(row: dict) -> None:
        if not curve.seconds:  # before epoch 1: setup (teacher statistics, folding, copies)
            curve.startup = time.perf_counter() - began - row["seconds"]
        curve.seconds.append(row["seconds"])
        if evaluate:
            curve.test_top1.append(_evaluate(student, bench))

    cfg = TrainConfig(
        epochs=epochs, batch_size=args.batch_size, lr=args.lr, device=str(bench.device),
        compile=compile_step, channels_last=channels_last,
    )  # fmt: skip
    result = distill(teacher, student, bench.splits, MEAN, STD, KD, cfg, on_epoch=on_epoch)
    curve.compile_mode = result.step.get("compile_mode", result.step.get("compiled"))
    return curve


def load(args: argparse.Namespace, device: torch.device) -> Bench:
    began = time.perf_counter()
    classes, files = scan_image_folder(Path(args.data) / "train")
    pick = torch.randperm(len(files), generator=torch.Generator().manual_seed(0))
    args.subset = min(args.subset, len(files) - 500)  # 500 images stay for validation
    samples = [files[i] for i in pick[: args.subset].tolist()]
    val_files = [files[i] for i in pick[args.subset : args.subset + 500].tolist()]
    _, test_files = scan_image_folder(Path(args.data) / "test")
    test_pick = torch.randperm(len(test_files), generator=torch.Generator().manual_seed(1))
    test_files = [test_files[i] for i in test_pick[: args.test].tolist()]
    cache = None if args.no_data_cache else default_cache_dir()
    decoded = [decode_images(s, 3, (32, 32), cache)[0] for s in (samples, val_files, test_files)]
    print(f"decode (or data-cache read) of {args.subset} + 500 + {args.test} images: "
          f"{time.perf_counter() - began:.1f} s, not part of any timing")  # fmt: skip
    train, val, test = decoded
    splits = DatasetSplits(train, val, test, classes, args.data, "test/ subset")
    return Bench(args, device, samples, splits)


def _student(args: argparse.Namespace, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(args.student, 10, 3)


def throughput(bench: Bench) -> dict[str, dict[str, object]]:
    args = bench.args
    variants: dict[str, Callable[[nn.Module, nn.Module], Curve]] = {
        "reference": lambda t, s: reference_loop(bench, t, s, args.epochs, False),
        "compressor": lambda t, s: compressor_loop(bench, t, s, args.epochs, False),
    }
    if bench.device.type == "cpu":  # the evidence for the channels-last default on CPU
        variants["compressor, NCHW"] = lambda t, s: compressor_loop(
            bench, t, s, args.epochs, False, channels_last=False
        )
    if args.with_compile:
        variants["compressor --compile"] = lambda t, s: compressor_loop(
            bench, t, s, args.epochs, False, compile_step=True
        )
    if args.with_eager:  # the default compiles on CUDA: this is the loop without it
        variants["compressor --no-compile"] = lambda t, s: compressor_loop(
            bench, t, s, args.epochs, False, compile_step=False
        )
    rows: dict[str, list[float]] = {name: [] for name in variants}
    modes: dict[str, object] = {}
    for rep in range(args.repeats):
        torch.manual_seed(100 + rep)
        teacher = build_model(args.teacher, 10, 3)  # untrained: speed does not depend on it
        for name, loop in variants.items():  # interleaved: machine noise hits every variant
            curve = loop(teacher, _student(args, rep))
            rows[name].append(curve.images_per_second())
            modes[name] = curve.compile_mode
        line = ", ".join(f"{name} {values[-1]:.0f} img/s" for name, values in rows.items())
        print(f"repeat {rep + 1}: {line}", flush=True)
    # Ratios are taken within a repeat (same machine state), then summarised over repeats.
    print("\n| loop | images/s per repeat | ratio to reference per repeat | median ratio |")
    print("| --- | --- | --- | ---: |")
    table: dict[str, dict[str, object]] = {}
    for name, values in rows.items():
        ratios = [v / r for v, r in zip(values, rows["reference"], strict=True)]
        per = ", ".join(f"{v:.0f}" for v in values)
        per_ratio = ", ".join(f"{q:.2f}x" for q in ratios)
        print(f"| {name} | {per} | {per_ratio} | {statistics.median(ratios):.2f}x |")
        table[name] = {
            "images_per_second": values,
            "ratio_to_reference": ratios,
            "median_ratio": statistics.median(ratios),
            "compile_mode": modes[name],
        }
    return table


def time_to_accuracy(bench: Bench) -> None:
    args = bench.args
    began = time.perf_counter()
    torch.manual_seed(7)
    teacher_cfg = TrainConfig(
        epochs=args.teacher_epochs, batch_size=args.batch_size, lr=0.1, device=str(bench.device)
    )
    ce = LossConfig(method="ce", bias_aware=False)
    trained = distill(
        None, build_model(args.teacher, 10, 3), bench.splits, MEAN, STD, ce, teacher_cfg
    )
    teacher = trained.student.to(bench.device).eval()
    print(
        f"\nteacher {args.teacher}: test top-1 {100 * _evaluate(teacher, bench):.2f}% after "
        f"{args.teacher_epochs} epochs ({time.perf_counter() - began:.0f} s, not timed below)",
        flush=True,
    )
    curves = {
        "reference": reference_loop(bench, teacher, _student(args, 0), args.tta_epochs, True),
        "compressor": compressor_loop(bench, teacher, _student(args, 0), args.tta_epochs, True),
    }
    print(f"\ntest top-1 per epoch ({args.test} CIFAR-10 test images):")
    for name, curve in curves.items():
        accs = " ".join(f"{100 * a:.1f}" for a in curve.test_top1)
        print(f"  {name:>10}: {accs}  (start-up {curve.startup:.1f} s)")
    print(f"\n| loop | time to {100 * args.target:.0f}% test top-1 | epochs | final top-1 |")
    print("| --- | ---: | ---: | ---: |")
    reached = {}
    for name, curve in curves.items():
        hit = curve.time_to(args.target)
        reached[name] = hit
        when = f"{hit[0]:.0f} s | {hit[1]}" if hit else f"not reached | >{args.tta_epochs}"
        print(f"| {name} | {when} | {100 * curve.test_top1[-1]:.1f}% |")
    if reached["reference"] and reached["compressor"]:
        print(f"| ratio | {reached['reference'][0] / reached['compressor'][0]:.2f}x | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--data", default="../shared/datasets/cifar10")
    parser.add_argument("--teacher", default="cifar_resnet20_w32")
    parser.add_argument("--student", default="cifar_resnet8_w16")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1),
        help="reference DataLoader workers (default: one per core, at most 8)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--subset", type=int, help="training images (preset)")
    parser.add_argument("--test", type=int, help="test images for accuracy (preset)")
    parser.add_argument("--epochs", type=int, help="epochs per throughput repeat (preset)")
    parser.add_argument("--teacher-epochs", type=int, help="teacher training epochs (preset)")
    parser.add_argument("--tta-epochs", type=int, help="epochs of each time-to-accuracy run")
    parser.add_argument("--target", type=float, help="test top-1 for time-to-accuracy")
    parser.add_argument(
        "--with-compile", action="store_true", help="also time compressor with --compile"
    )
    parser.add_argument(
        "--with-eager", action="store_true", help="also time compressor with --no-compile"
    )
    parser.add_argument("--no-data-cache", action="store_true")
    parser.add_argument("--skip", choices=["throughput", "tta"], help="run only one part")
    parser.add_argument("--json", type=Path, help="also write the throughput table as JSON")
    args = parser.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = resolve_device(args.device)
    print("command: python " + " ".join(sys.argv))
    print(f"hardware: {hardware()}\nversions: {versions()}\ndevice: {device}")
    print(
        f"teacher {args.teacher}, student {args.student}, batch {args.batch_size}, "
        f"{args.subset} training images, random crop + flip"
    )
    bench = load(args, device)
    if args.skip != "throughput":
        table = throughput(bench)
        if args.json:
            payload = {
                "command": "python " + " ".join(sys.argv),
                "device": str(device),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                "teacher": args.teacher,
                "student": args.student,
                "batch_size": args.batch_size,
                "training_images": args.subset,
                "epochs_per_repeat": args.epochs,
                "repeats": args.repeats,
                "loops": table,
            }
            args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if args.skip != "tta":
        time_to_accuracy(bench)


if __name__ == "__main__":
    main()
