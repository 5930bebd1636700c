"""Precision-aware selection: with `quantization = "int8"` candidates are judged as int8 graphs.

Runs `compressor run --profile cpu-1thread-int8` on a 6-class, 32-px CIFAR-10 subset with a
teacher large enough that the speedup rule does not bind (cifar_resnet44_w32, trained briefly
here), and prints, from the run's own selection table, what an fp32-judged selection would have
chosen next to what was chosen, and the shipped model's budget use.

    python benchmarks/int8_selection.py --work /tmp/int8sel
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("airplane", "automobile", "bird", "cat", "ship", "truck")
TEACHER = "cifar_resnet44_w32"


def build_subset(src: Path, dst: Path, train: int = 500, test: int = 100) -> Path:
    if (dst / ".complete").exists():
        return dst
    for split, count in (("train", train), ("test", test)):
        for name in CLASSES:
            out = dst / split / name
            out.mkdir(parents=True, exist_ok=True)
            for f in sorted((src / split / name).glob("*.jpg"))[:count]:
                Image.open(f).save(out / f.name, quality=95)
    (dst / ".complete").write_text("ok\n")
    return dst


def train_teacher(data: Path, path: Path, epochs: int) -> None:
    if path.exists():
        return
    sys.path.insert(0, str(REPO))
    from compressor.data.splits import load_image_folder
    from compressor.losses.total import LossConfig
    from compressor.models.checkpoint import save_bundle
    from compressor.models.registry import build_model
    from compressor.train.loop import TrainConfig, distill

    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
    splits = load_image_folder(data, (3, 32, 32), seed=0)
    torch.manual_seed(0)
    model = build_model(TEACHER, len(CLASSES))
    result = distill(
        None,
        model,
        splits,
        mean,
        std,
        LossConfig(method="ce"),
        TrainConfig(epochs=epochs, batch_size=128, lr=0.1, device="cpu"),
    )
    save_bundle(
        path,
        result.student,
        TEACHER,
        num_classes=len(CLASSES),
        in_channels=3,
        input_size=(32, 32),
        mean=mean,
        std=std,
        class_names=splits.class_names,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cifar", type=Path, default=REPO.parent / "shared/datasets/cifar10")
    parser.add_argument("--work", type=Path, default=Path("/tmp/int8sel"))
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    data = build_subset(args.cifar, args.work / "data")
    teacher = args.work / "teacher.pt"
    train_teacher(data, teacher, args.teacher_epochs)
    out = args.work / "run"
    cmd = [
        sys.executable,
        "-m",
        "compressor",
        "run",
        "--teacher",
        str(teacher),
        "--data",
        str(data),
        "--profile",
        "cpu-1thread-int8",
        "--out",
        str(out),
        "--epochs",
        str(args.epochs),
        "--overwrite",
        "--no-data-cache",
    ]
    print("$ " + " ".join(cmd), flush=True)
    began = time.perf_counter()
    code = subprocess.run(cmd, cwd=REPO, check=False).returncode
    report = json.loads((out / "report.json").read_text())
    sel, budget = report["selection"], report["profile"]["latency_ms"]
    target = sel["target_ms"]
    timed = [c for c in sel["candidates"] if c["at_percentile_ms"] is not None]
    fp32_pick = max(
        (c for c in timed if c["fp32_at_percentile_ms"] <= target and c.get("faster") is not False),
        key=lambda c: c["mflops"],
        default=None,
    )
    chosen = next(c for c in timed if c["name"] == sel["chosen"])
    shipped = report["shipped"]
    print(
        f"\ncpu: {platform.processor() or platform.machine()}; exit code {code}; "
        f"{time.perf_counter() - began:.0f} s"
    )
    print("| candidate | MFLOPs | fp32 p90 ms | int8 p90 ms | speedup vs teacher | qualifies |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for c in timed:
        ok = c["qualifies"]
        print(
            f"| {c['name']} | {c['mflops']:.1f} | {c['fp32_at_percentile_ms']:.3f} | "
            f"{c['at_percentile_ms']:.3f} | {c['speedup']:.2f}x | {'yes' if ok else 'no'} |"
        )
    if fp32_pick:
        print(
            f"\nfp32-judged selection would pick {fp32_pick['name']}: int8 p90 "
            f"{fp32_pick['at_percentile_ms']:.3f} ms = "
            f"{100 * fp32_pick['at_percentile_ms'] / budget:.0f}% of the {budget:g} ms budget"
        )
    print(
        f"int8-judged selection picked {chosen['name']}: int8 p90 "
        f"{chosen['at_percentile_ms']:.3f} ms = {100 * chosen['at_percentile_ms'] / budget:.0f}%"
    )
    lat = shipped["latency"]["at_percentile_ms"]
    print(
        f"shipped: {shipped['precision']}, verified p90 {lat:.3f} ms = {100 * lat / budget:.0f}% "
        f"of the budget; decision: {report.get('int8', {}).get('decision', {}).get('reason')}"
    )
    print(
        f"student top-1 {100 * report['accuracy']['student_top1']:.2f}%, teacher "
        f"{100 * report['accuracy']['teacher_top1']:.2f}%"
    )


if __name__ == "__main__":
    main()
