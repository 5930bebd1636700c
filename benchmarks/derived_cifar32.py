"""The 32-px CIFAR case: a derived (width-pruned) student vs the fresh ladder (#21).

A ``cifar_resnet56_w64`` teacher is too slow to train on a 2-core CPU, so the teacher here is a
``cifar_resnet20_w32`` (``compressor.models.registry.build_model``) trained from random weights at
32x32 on a CIFAR-10 subset: the first ``--train-per-class`` (500) images of each class of
``../shared/datasets/cifar10/train`` (copied to ``<work>/data/train``) and the first
``--test-per-class`` (200) of ``test`` (``<work>/data/test``). Plain cross-entropy, SGD
(Nesterov 0.9, wd 5e-4, batch 128), cosine learning rate from 0.1, random crop (pad 4) + flip,
CIFAR mean/std; saved with ``compressor.models.checkpoint.save_bundle`` (mean/std and input size
recorded) as ``<work>/teacher.pt`` and reused when present.

Then one ``compressor run`` per arm on profile ``cpu-1thread`` (1 onnxruntime thread, batch 1,
p90 <= 1.5 ms), same seed and epochs::

    python -m compressor run --teacher <work>/teacher.pt --data <work>/data \\
        --profile cpu-1thread --out <work>/runs/<arm>_s<seed> --epochs 10 --overwrite \\
        --no-data-cache --seed 0 --student-source pruned|fresh

Rows are appended to ``--results`` (JSON lines) as each run finishes; the table shows student
and teacher test top-1 and the measured (alternating) speedup. Peak RSS: ``/usr/bin/time -v``.

    nice -n 5 python benchmarks/derived_cifar32.py --work /tmp/cifar32
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import derived224  # noqa: E402  (peak RSS, environment line, percentages)

from compressor.models.checkpoint import save_bundle  # noqa: E402
from compressor.models.registry import build_model, count_params  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cifar", type=Path, default=REPO.parent / "shared/datasets/cifar10")
    p.add_argument("--work", type=Path, default=Path("/tmp/cifar32"))
    p.add_argument("--teacher-arch", default="cifar_resnet20_w32")
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--train-per-class", type=int, default=500)
    p.add_argument("--test-per-class", type=int, default=200)
    p.add_argument("--arms", default="pruned,fresh", help="pruned, fresh")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--profile", default="cpu-1thread")
    p.add_argument("--results", type=Path, default=Path("/tmp/derived224/derived_cifar32.jsonl"))
    p.add_argument("--table-only", action="store_true")
    return p.parse_args(argv)


def build_subset(src: Path, dst: Path, train: int, test: int) -> Path:
    """Copy the first ``train``/``test`` images of each class (idempotent)."""
    marker = dst / f".complete_{train}_{test}"
    if marker.exists():
        return dst
    for split, count in (("train", train), ("test", test)):
        for name in CLASSES:
            out = dst / split / name
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            for f in sorted((src / split / name).glob("*.jpg"))[:count]:
                shutil.copyfile(f, out / f.name)
    marker.write_text("ok\n")
    return dst


def decode(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for label, name in enumerate(CLASSES):
        for f in sorted((root / name).glob("*.jpg")):
            with Image.open(f) as im:
                xs.append(np.asarray(im.convert("RGB").resize((32, 32)), dtype=np.uint8))
            ys.append(label)
    return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous(), torch.tensor(ys)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the 4-px zero-padded image, and a horizontal flip."""
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    out = torch.empty_like(x)
    offsets = torch.randint(0, 9, (len(x), 2), generator=gen)
    flips = torch.rand(len(x), generator=gen) < 0.5
    for i, (dy, dx) in enumerate(offsets.tolist()):
        crop = padded[i, :, dy : dy + 32, dx : dx + 32]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


@torch.no_grad()
def top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(normalize(x[i : i + 500])).argmax(1) for i in range(0, len(x), 500)])
    return float((pred == y).float().mean())


def ensure_teacher(args: argparse.Namespace, data: Path) -> Path:
    path, record = args.work / "teacher.pt", args.work / "teacher.json"
    if path.exists() and record.exists():
        return path
    began = time.perf_counter()
    train_x, train_y = decode(data / "train")
    test_x, test_y = decode(data / "test")
    torch.manual_seed(0)
    model = build_model(args.teacher_arch, len(CLASSES), 3)
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    bs, n = 128, len(train_y)
    total, step = args.teacher_epochs * math.ceil(n / bs), 0
    shuffle, aug = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    history = []
    for epoch in range(args.teacher_epochs):
        model.train()
        order = torch.randperm(n, generator=shuffle)
        seen = correct = 0
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            for group in opt.param_groups:
                group["lr"] = 0.1 * 0.5 * (1 + math.cos(math.pi * step / total))
            out = model(normalize(augment(train_x[idx], aug)))
            loss = torch.nn.functional.cross_entropy(out, train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(idx)
            correct += int((out.argmax(1) == train_y[idx]).sum())
        history.append({"epoch": epoch + 1, "train_top1": correct / seen})
        print(f"teacher epoch {epoch + 1}: train top-1 {correct / seen:.3f}", flush=True)
    model.eval()
    info = {
        "arch": args.teacher_arch, "params": count_params(model), "epochs": args.teacher_epochs,
        "train_images": n, "test_images": len(test_y), "history": history,
        "test_top1": top1(model, test_x, test_y), "seconds": time.perf_counter() - began,
    }  # fmt: skip
    save_bundle(
        path, model, args.teacher_arch, num_classes=len(CLASSES), in_channels=3,
        input_size=(32, 32), mean=MEAN, std=STD, class_names=CLASSES,
    )  # fmt: skip
    record.write_text(json.dumps(info, indent=1))
    print(f"teacher: test top-1 {info['test_top1']:.4f}, {info['seconds']:.0f} s", flush=True)
    return path


def run_one(args: argparse.Namespace, teacher: Path, data: Path, arm: str, seed: int) -> dict:
    name = f"{arm}_s{seed}"
    out = args.work / "runs" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "compressor", "run", "--teacher", str(teacher), "--data", str(data),
        "--profile", args.profile, "--out", str(out), "--epochs", str(args.epochs),
        "--overwrite", "--no-data-cache", "--seed", str(seed), "--student-source", arm,
    ]  # fmt: skip
    log, time_file = out.parent / f"{name}.log", out.parent / f"{name}.time"
    print(f"$ {' '.join(cmd)}  (log {log})", flush=True)
    load, date = os.getloadavg(), datetime.datetime.now().isoformat(timespec="seconds")
    began = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(["/usr/bin/time", "-v", "-o", str(time_file), *cmd], cwd=REPO,
                              stdout=fh, stderr=subprocess.STDOUT, check=False)  # fmt: skip
    wall = time.perf_counter() - began
    row: dict[str, Any] = {
        "arm": arm, "seed": seed, "command": " ".join(cmd), "date": date,
        "exit_code": proc.returncode,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "wall_s": wall,
        "peak_rss_gib": derived224.peak_rss_gib(time_file), "loadavg_start": load,
        "log_tail": log.read_text(errors="replace")[-1500:],
    }  # fmt: skip
    report_path = out / "report.json"
    if report_path.exists() and report_path.stat().st_mtime >= time.time() - wall - 5:
        report = json.loads(report_path.read_text())
        sel, acc, dist = report["selection"], report["accuracy"], report["distillation"]
        speed = report.get("speedup") or {}
        row.update(
            chosen=sel["chosen"], student_source=sel.get("student_source"),
            val_top1_before_training=(sel.get("derived") or {}).get("val_top1_before_training"),
            best_epoch=dist["best_epoch"], best_val_top1=dist["best_val_top1"],
            student_top1=acc["student_top1"], teacher_top1=acc["teacher_top1"],
            top1_drop=acc["top1_drop"], test_images=acc["images"],
            speedup=speed.get("speedup"), teacher_ms=speed.get("teacher_ms"),
            student_ms=speed.get("student_ms"), param_ratio=report["size"]["param_ratio"],
            student_mflops=report["size"]["student_mflops"],
            failed_gates=report.get("failed_gates"),
        )  # fmt: skip
    return row


def table(rows: list[dict[str, Any]]) -> str:
    pct = derived224.pct
    lines = [
        "| arm | seed | exit | chosen student | val top-1 % before training | "
        "best val epoch / top-1 % | student test top-1 % | teacher test top-1 % | "
        "drop (points) | teacher / student ms | speedup (alternating) | param ratio | wall s | "
        "peak RSS GiB | load avg at start |",
        "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | "
        "---: | ---: |",
    ]
    for r in rows:
        rss = "-" if r.get("peak_rss_gib") is None else f"{r['peak_rss_gib']:.2f}"
        tail = f" | {r['wall_s']:.0f} | {rss} | {r['loadavg_start'][0]:.2f} |"
        head = f"| {r['arm']} | {r['seed']} | {r['exit_code']} | "
        if "student_top1" not in r:
            last = r.get("log_tail", "").strip().splitlines()[-1:] or [""]
            lines.append(head + f"no report: {last[0][:120]} | | | | | | | | " + tail[3:])
            continue
        speed = "-" if r.get("speedup") is None else f"{r['speedup']:.2f}x"
        ms = (
            "-" if r.get("teacher_ms") is None else f"{r['teacher_ms']:.3f} / {r['student_ms']:.3f}"
        )
        lines.append(
            head + f"{r['chosen']} | {pct(r['val_top1_before_training'])} | "
            f"{r['best_epoch']} / {pct(r['best_val_top1'])} | {pct(r['student_top1'])} | "
            f"{pct(r['teacher_top1'])} | {100 * r['top1_drop']:.2f} | {ms} | {speed} | "
            f"{r['param_ratio']:.2f}x" + tail
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.table_only:
        args.work.mkdir(parents=True, exist_ok=True)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        data = build_subset(
            args.cifar, args.work / "data", args.train_per_class, args.test_per_class
        )
        teacher = ensure_teacher(args, data)
        for seed in args.seeds:
            for arm in args.arms.split(","):
                row = run_one(args, teacher, data, arm, seed)
                with args.results.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(
                    f"{arm} seed {seed}: exit {row['exit_code']}, {row['wall_s']:.0f} s", flush=True
                )
    print("\n" + derived224.environment())
    teacher_record = args.work / "teacher.json"
    if teacher_record.exists():
        t = json.loads(teacher_record.read_text())
        print(f"teacher: {t['arch']} ({t['params']:,} params), {t['epochs']} epochs on "
              f"{t['train_images']} images: test top-1 {100 * t['test_top1']:.2f}% on "
              f"{t['test_images']} (own eval), {t['seconds']:.0f} s")  # fmt: skip
    print(f"results: {args.results}\n")
    print(table(derived224.read_rows(args.results)))


if __name__ == "__main__":
    main()
