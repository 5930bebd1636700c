"""Does ``compressor run --student-init`` beat a from-scratch student on a 224-px case? (#15 C)

Production students start from ImageNet weights; nothing can be downloaded here, so the
pretrained weights are made here, on data the target task never sees:

1. **Pre-training.** The student architecture of the 224-px photo case (``--arch``, default
   ``mobilenet_v3_small_x0.5``: what selection picked for ``benchmarks/photo224.py``'s run; the
   runs below force it with ``--candidates`` so that both arms train the same network) is
   trained from random weights on the *other* four CIFAR-10 classes (deer, dog, frog, horse),
   given the same photo treatment as the case (upscaled to 200x150 JPEG, quality 90; eval crop
   Resize(256) + CenterCrop(224); RandomResizedCrop 0.25-1 + flip as compressor trains students
   at 224 px; ImageNet mean/std, which the case's teacher uses). Plain cross-entropy, SGD
   (Nesterov 0.9, wd 5e-4), cosine learning rate, BatchNorm statistics recomputed at the end.
   Its top-1 on 400 held-out test images of those four classes is printed as a sanity check.
   The state dict is saved as ``<work>/init/<arch>.pt`` (the folder form of ``--student-init``).
2. **The case.** ``compressor run`` on the photo224 data (6 classes: airplane, automobile, bird,
   cat, ship, truck; the mobilenet_v3_small teacher of ``benchmarks/photo224.py``) twice per
   seed, at the same epochs and seed, without and with ``--student-init <work>/init``. The
   order of the two arms alternates with the seed.

Printed: a table of student test top-1 (onnxruntime, ``report.json`` accuracy.student_top1),
top1_drop, best validation epoch, wall time, exit code and what ``report.json`` says was loaded
(``distillation.student_init``). Everything goes to ``--results`` (JSON)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/student_init224.py --work /tmp/photo224 \\
        --seeds 0,1 --epochs 6 [--accuracy-only-profile]

``--accuracy-only-profile`` replaces ``--profile`` by a copy of mobile-224 whose latency budget
cannot fail (``SHARED_HOST_PROFILE``), for a loaded shared host where the bundled profile's
2-thread timing refuses every candidate before training starts.

The photo224 data and teacher in ``--work`` are reused when present (built by
``benchmarks/photo224.py`` otherwise); so is the pre-trained file unless ``--retrain``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import photo224  # noqa: E402  (the case's data and teacher)

from compressor.data.splits import random_resized_crop  # noqa: E402
from compressor.models.registry import build_model, count_params  # noqa: E402

PRETRAIN_CLASSES = ("deer", "dog", "frog", "horse")  # CIFAR-10 classes absent from photo224
MEAN, STD = photo224.MEAN, photo224.STD
SIZE, RESIZE = 224, 256
# mobile-224's input, preprocessing, training crop scale (default) and accuracy gates, with a
# latency budget and speedup a loaded shared host cannot fail and one onnxruntime thread. On the
# 2-vCPU development VM under other engineers' jobs, the bundled profile's 2-thread timing put
# the 0.7-ms mobilenet_v3_small_x0.5 at 17 ms p90 and selection refused it (exit 2). Latency is
# not what this benchmark measures; training and accuracy do not depend on these settings.
SHARED_HOST_PROFILE = """\
name = "mobile-224-accuracy-only"
description = "mobile-224 input, preprocessing and gates; latency budget that cannot fail"

[input]
shape = [3, 224, 224]
batch_size = 1

[runtime]
intra_op_threads = 1
inter_op_threads = 1

[budget]
latency_ms = 1000.0
percentile = 90
safety_margin = 0.10
warmup_runs = 5
min_iterations = 20
min_seconds = 0.2
min_speedup = 1.0

[gates]
max_top1_drop = 0.03

[export]
opset = 18

[preprocess]
resize_mode = "center-crop"
resize_size = 256
interpolation = "bilinear"
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cifar", type=Path, default=Path("/work/shared/datasets/cifar10"))
    p.add_argument("--work", type=Path, default=Path("/tmp/photo224"))
    p.add_argument("--arch", default="mobilenet_v3_small_x0.5", help="the student architecture")
    p.add_argument("--profile", default="mobile-224")
    p.add_argument(
        "--accuracy-only-profile",
        action="store_true",
        help="use a copy of mobile-224 whose latency budget cannot fail (see SHARED_HOST_PROFILE)",
    )
    p.add_argument("--epochs", type=int, default=6, help="compressor run --epochs (both arms)")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    p.add_argument("--teacher-epochs", type=int, default=8, help="only if no teacher is cached")
    p.add_argument("--pretrain-per-class", type=int, default=1000)
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--pretrain-batch", type=int, default=64)
    p.add_argument("--pretrain-lr", type=float, default=0.05)
    p.add_argument("--retrain", action="store_true", help="pre-train again even if cached")
    p.add_argument("--threads", type=int, default=1, help="torch threads for pre-training")
    p.add_argument(
        "--results",
        type=Path,
        default=Path("~/.cache/compressor-bench/student_init224.json"),
    )
    args = p.parse_args(argv)
    args.results = args.results.expanduser()
    return args


# ---------------------------------------------------------------------------- pre-training


def photo_split(src: Path, dst: Path, split: str, count: int) -> Path:
    """The photo treatment of ``photo224.build_photos`` (200x150 bicubic, JPEG quality 90) for
    the first ``count`` files of each pre-training class (idempotent)."""
    marker = dst / f".complete_{split}_{count}"
    if marker.exists():
        return dst / split
    for name in PRETRAIN_CLASSES:
        out = dst / split / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for f in sorted((src / split / name).glob("*.jpg"))[:count]:
            with Image.open(f) as im:
                im.convert("RGB").resize((200, 150), Image.Resampling.BICUBIC).save(
                    out / f.name, quality=90
                )
    marker.write_text("ok\n")
    return dst / split


def decode(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, 224, 224) eval crops (torchvision Resize(256) + CenterCrop(224)), labels."""
    crop = T.Compose([T.Resize(RESIZE), T.CenterCrop(SIZE)])
    xs, ys = [], []
    for label, name in enumerate(PRETRAIN_CLASSES):
        for f in sorted((root / name).glob("*.jpg")):
            with Image.open(f) as im:
                xs.append(np.asarray(crop(im.convert("RGB")), dtype=np.uint8))
            ys.append(label)
    return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous(), torch.tensor(ys)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((x.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def precise_batchnorm(model: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> None:
    """BatchNorm statistics over up to 1,024 un-augmented training images (MobileNetV3's
    momentum of 0.01 leaves them near their initial values after a short schedule)."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average
    model.train()
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:1024]
    for i in range(0, len(pick), batch):
        model(normalize(images[pick[i : i + batch]]))
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    model.eval()


@torch.no_grad()
def top1(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(normalize(images[i : i + 100])).argmax(1)
                      for i in range(0, len(images), 100)])  # fmt: skip
    return float((pred == labels).float().mean())


def pretrain(args: argparse.Namespace) -> dict[str, Any]:
    """Train ``args.arch`` on the four other classes; save ``<work>/init/<arch>.pt``."""
    folder = args.work / "init"
    path = folder / f"{args.arch}.pt"
    record = folder / f"{args.arch}.json"
    if path.exists() and record.exists() and not args.retrain:
        print(f"pre-trained weights reused: {path}", flush=True)
        return json.loads(record.read_text())
    began = time.perf_counter()
    src = args.work / "pretrain_photos"
    train_x, train_y = decode(photo_split(args.cifar, src, "train", args.pretrain_per_class))
    test_x, test_y = decode(photo_split(args.cifar, src, "test", 100))
    prepared = time.perf_counter() - began
    print(
        f"pre-training data: {len(train_y)} train / {len(test_y)} test images of "
        f"{', '.join(PRETRAIN_CLASSES)} ({prepared:.0f} s to build and decode)",
        flush=True,
    )
    torch.manual_seed(0)
    model = build_model(args.arch, len(PRETRAIN_CLASSES), 3).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), args.pretrain_lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)  # fmt: skip
    n, bs = len(train_y), args.pretrain_batch
    total, step = args.pretrain_epochs * math.ceil(n / bs), 0
    shuffle, aug = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    history = []
    for epoch in range(args.pretrain_epochs):
        model.train()
        seen = correct = 0
        loss_sum = 0.0
        epoch_began = time.perf_counter()
        order = torch.randperm(n, generator=shuffle)
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            for group in opt.param_groups:
                group["lr"] = args.pretrain_lr * 0.5 * (1 + math.cos(math.pi * step / total))
            x = random_resized_crop(train_x[idx], aug, (0.25, 1.0))
            out = model(normalize(x))
            loss = torch.nn.functional.cross_entropy(out, train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(idx)
            correct += int((out.argmax(1) == train_y[idx]).sum())
            loss_sum += float(loss.detach()) * len(idx)
        row = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_top1": correct / seen,
               "seconds": time.perf_counter() - epoch_began}  # fmt: skip
        history.append(row)
        print(
            f"pre-train epoch {epoch + 1}/{args.pretrain_epochs}: loss {row['loss']:.3f}, "
            f"train top-1 {row['train_top1']:.3f} ({row['seconds']:.0f} s)",
            flush=True,
        )
    precise_batchnorm(model, train_x)
    info = {
        "arch": args.arch, "params": count_params(model), "classes": PRETRAIN_CLASSES,
        "train_images": n, "test_images": len(test_y), "epochs": args.pretrain_epochs,
        "batch": bs, "lr": args.pretrain_lr, "history": history,
        "test_top1_4_classes": top1(model, test_x, test_y),
        "seconds": time.perf_counter() - began, "path": str(path),
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    record.write_text(json.dumps(info, indent=1))
    print(
        f"pre-trained {args.arch}: test top-1 {info['test_top1_4_classes']:.4f} on the 4 "
        f"pre-training classes (chance 0.25), {info['seconds']:.0f} s; saved {path}",
        flush=True,
    )
    return info


# ------------------------------------------------------------------------------- the case


def run_case(args: argparse.Namespace, seed: int, init: bool) -> dict[str, Any]:
    """One ``compressor run`` of the photo224 case; its report's numbers and wall time."""
    out = args.work / "student_init_runs" / f"{'init' if init else 'scratch'}_s{seed}"
    cmd = [
        sys.executable, "-m", "compressor", "run", "--teacher", str(args.work / "teacher.pt"),
        "--arch", "mobilenet_v3_small", "--data", str(args.work / "data"),
        "--profile", args.profile, "--candidates", args.arch, "--out", str(out),
        "--epochs", str(args.epochs), "--seed", str(seed), "--overwrite", "--no-data-cache",
        "--quiet",
    ]  # fmt: skip
    if init:
        cmd += ["--student-init", str(args.work / "init")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    print("$ " + " ".join(cmd), flush=True)
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - began
    result: dict[str, Any] = {
        "seed": seed, "init": init, "command": cmd, "exit_code": proc.returncode,
        "wall_seconds": wall, "loadavg_1min": [load_before, os.getloadavg()[0]],
        "stderr_tail": proc.stderr[-2000:],
    }  # fmt: skip
    if not (out / "report.json").exists():
        print(proc.stderr[-2000:], flush=True)
        return result
    report = json.loads((out / "report.json").read_text())
    dist = report["distillation"]
    result.update(
        chosen=report["selection"]["chosen"],
        student_top1=report["accuracy"]["student_top1"],
        teacher_top1=report["accuracy"]["teacher_top1"],
        top1_drop=report["accuracy"]["top1_drop"],
        test_images=report["accuracy"]["images"],
        failed_gates=report["failed_gates"],
        best_epoch=dist["best_epoch"],
        best_val_top1=dist["best_val_top1"],
        val_top1_per_epoch=[r["val_top1"] for r in dist["history"]],
        train_seconds=dist["seconds"],
        student_init=dist.get("student_init"),
        loss=dist["loss"],
    )
    return result


def loaded(r: dict[str, Any]) -> str:
    init = r.get("student_init")
    if not init:
        return "nothing (random init)"
    return (
        f"{Path(init['path']).name}: {init['loaded_tensors']} tensors, "
        f"{len(init['reinitialised'])} re-initialised ({', '.join(init['reinitialised'])})"
    )


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| seed | student start | student top-1 % (onnxruntime) | top1_drop (points) | "
        "val top-1 % per epoch | best epoch | wall s | exit | "
        "report.json distillation.student_init |",
        "| ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in sorted(runs, key=lambda r: (r["seed"], r["init"])):
        if "student_top1" not in r:
            lines.append(f"| {r['seed']} | {'init' if r['init'] else 'scratch'} | failed "
                         f"(exit {r['exit_code']}) | | | | {r['wall_seconds']:.0f} | "
                         f"{r['exit_code']} | |")  # fmt: skip
            continue
        lines.append(
            f"| {r['seed']} | {'pre-trained' if r['init'] else 'scratch'} | "
            f"{100 * r['student_top1']:.2f} | {100 * r['top1_drop']:.2f} | "
            + ", ".join(f"{100 * v:.1f}" for v in r["val_top1_per_epoch"])
            + f" | {r['best_epoch']} | {r['wall_seconds']:.0f} | {r['exit_code']} | {loaded(r)} |"
        )
    pairs = {}
    for r in runs:
        if "student_top1" in r:
            pairs.setdefault(r["seed"], {})[r["init"]] = r["student_top1"]
    diffs = [p[True] - p[False] for p in pairs.values() if len(p) == 2]
    if diffs:
        lines.append("")
        lines.append("pre-trained minus scratch, student test top-1 per seed: "
                     + ", ".join(f"{100 * d:+.2f}" for d in diffs)
                     + f" points (mean {100 * sum(diffs) / len(diffs):+.2f})")  # fmt: skip
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(ln.split(":", 1)[1].strip() for ln in out.splitlines()
                    if ln.startswith("Model name"))  # fmt: skip
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.accuracy_only_profile:
        path = args.work / "mobile-224-accuracy-only.toml"
        path.write_text(SHARED_HOST_PROFILE)
        args.profile = str(path)
    photo224.build_photos(args.cifar, args.work / "data", 250, 100)  # no-op when cached
    if not (args.work / "teacher.pt").exists():
        photo224.train_teacher(args.work / "data", args.work / "teacher.pt", args.teacher_epochs)
    results: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_name(), "cores": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__},
        "loadavg_start": os.getloadavg(), "profile": args.profile,
        "profile_text": SHARED_HOST_PROFILE if args.accuracy_only_profile else None,
    }  # fmt: skip
    results["pretrain"] = pretrain(args)
    results["runs"] = []

    def save() -> None:
        results["wall_seconds"] = time.perf_counter() - started
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=1))

    save()
    for seed in args.seeds:
        for init in (False, True) if seed % 2 == 0 else (True, False):
            r = run_case(args, seed, init)
            results["runs"].append(r)
            save()
            got = f"{100 * r['student_top1']:.2f}%" if "student_top1" in r else "no report"
            print(
                f"seed {seed} {'pre-trained' if init else 'scratch'}: student top-1 {got}, "
                f"exit {r['exit_code']}, {r['wall_seconds']:.0f} s",
                flush=True,
            )
    results["loadavg_end"] = os.getloadavg()
    save()
    p = results["pretrain"]
    print(f"\ncpu: {results['cpu']}, {results['cores']} cores; {results['date']}")
    print(f"pre-training: {p['arch']} ({p['params']:,} params) on {p['train_images']} images of "
          f"{', '.join(p['classes'])}, {p['epochs']} epochs: {100 * p['test_top1_4_classes']:.2f}% "
          f"on {p['test_images']} held-out test images, {p['seconds']:.0f} s")  # fmt: skip
    print(table(results["runs"]))
    print(f"\ntotal wall time {results['wall_seconds'] / 60:.1f} min; results: {args.results}")


if __name__ == "__main__":
    main()
