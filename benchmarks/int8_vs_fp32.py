"""Int8 (onnxruntime static QDQ) vs fp32 ONNX on a CIFAR-10 student: top-1 and CPU latency.

Trains (or reuses from the cache) a cifar_resnet20_w16 on a CIFAR-10 subset, exports it with
``compressor.export.to_onnx.export_onnx``, quantizes it with
``compressor.export.int8.quantize_int8`` on
training images, then measures both models *in the same process, interleaved* (fp32 and int8
alternate within every repeat, order flipped each repeat) with
``compressor.latency.timing.measure_onnx``,
and top-1 on the full 10k test set::

    python benchmarks/int8_vs_fp32.py            # ~3 min once the student is cached
    python benchmarks/int8_vs_fp32.py --smoke    # a minute: checks the script only

Training the student (5 epochs on 10k images) is cached in --cache-dir; measured on 2 shared
cores it took 159 s an epoch at load average ~4 and 280-370 s at load 6-8 (24 min in all).

Latency columns are medians over the repeats of each repeat's p50/p90; ratio = int8 / fp32
(below 1 means int8 is faster). Load average is printed because other jobs distort timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from compressor.data.splits import (
    DatasetSplits,
    Split,
    load_image_folder,
    normalize,
    stratified_split,
)
from compressor.export.int8 import RELEVANT_FLAGS, cpu_flags, decide_int8, quantize_int8
from compressor.export.to_onnx import export_onnx
from compressor.export.verify import VerifyReport, onnx_logits, topk_accuracy
from compressor.files import atomic_write, write_json_atomic
from compressor.latency.timing import LatencyStats, TimingSettings, measure_onnx
from compressor.losses.total import LossConfig
from compressor.models.registry import build_model
from compressor.train.loop import TrainConfig, distill

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
SHAPE = (3, 32, 32)
DATA_SEED = 0
MAX_TOP1_DROP = 0.01  # int8 vs fp32 (no teacher here), as fed to decide_int8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/work/shared/datasets/cifar10"))
    p.add_argument("--cache-dir", type=Path, default=Path("~/.cache/compressor-bench"))
    p.add_argument("--arch", default="cifar_resnet20_w16")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--val-size", type=int, default=2000)
    p.add_argument("--test-size", type=int, help="default: the full 10k test set")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--calibration", type=int, default=300, help="training images for int8")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--threads", default="1,2", help="onnxruntime intra-op thread counts")
    p.add_argument("--repeats", type=int, default=5, help="interleaved fp32/int8 repeats")
    p.add_argument("--min-seconds", type=float, default=0.5, help="per measurement")
    p.add_argument("--smoke", action="store_true", help="tiny data, 1 epoch, 1 repeat")
    args = p.parse_args(argv)
    if args.smoke:
        args.train_size, args.val_size, args.test_size, args.epochs = 500, 200, 500, 1
        args.repeats, args.min_seconds = 1, 0.1
    args.cache_dir = args.cache_dir.expanduser()
    return args


def subsample(split: Split, size: int | None, seed: int) -> Split:
    """A stratified, seeded subset of ``size`` images (the whole split when size is None)."""
    if size is None or size >= len(split):
        return split
    _, keep = stratified_split(split.labels, size / len(split), seed)
    return Split(split.images[keep], split.labels[keep])


def load_data(args: argparse.Namespace) -> DatasetSplits:
    """CIFAR-10 as uint8 tensors, decoded once and cached (same file as bias_kd_cifar10.py)."""
    cache = args.cache_dir / f"cifar10_u8_valseed{DATA_SEED}.pt"
    full = None
    if cache.exists():
        try:
            full = torch.load(cache, weights_only=False)  # our own file
        except Exception as exc:  # e.g. being written by another benchmark right now
            print(f"cache {cache} unreadable ({type(exc).__name__}); decoding again", flush=True)
    if not isinstance(full, DatasetSplits) or full.root != str(args.data.resolve()):
        print(f"decoding {args.data} (once; cached in {cache}) ...", flush=True)
        full = load_image_folder(args.data.resolve(), SHAPE, seed=DATA_SEED, val_fraction=0.1)
        atomic_write(cache, lambda tmp: torch.save(full, tmp))
    return dataclasses.replace(
        full,
        train=subsample(full.train, args.train_size, DATA_SEED),
        val=subsample(full.val, args.val_size, DATA_SEED),
        test=subsample(full.test, args.test_size, DATA_SEED),
    )


def get_student(args: argparse.Namespace, data: DatasetSplits) -> tuple[torch.nn.Module, dict]:
    """Train with plain CE (teacher=None) once per setting, or load the cached weights."""
    name = f"int8bench_{args.arch}_n{len(data.train)}_v{len(data.val)}_e{args.epochs}_s0.pt"
    path = args.cache_dir / name
    model = build_model(args.arch, len(data.class_names), SHAPE[0])
    if path.exists():
        saved = torch.load(path)
        model.load_state_dict(saved["state_dict"])
        print(f"student loaded from {path}", flush=True)
        return model.eval(), {**saved["meta"], "cache": str(path)}
    print(f"training {args.arch} for {args.epochs} epochs on {len(data.train)} images", flush=True)
    result = distill(
        None,
        model,
        data,
        MEAN,
        STD,
        LossConfig(method="ce", bias_aware=False),
        TrainConfig(args.epochs, 128, 0.05, seed=DATA_SEED, device="cpu"),
        on_epoch=lambda r: print(
            f"  epoch {r['epoch']}: val top-1 {r['val_top1']:.4f} ({r['seconds']:.0f} s)",
            flush=True,
        ),
    )
    meta = {k: getattr(result, k) for k in ("seconds", "best_epoch", "best_val_top1")}
    atomic_write(
        path, lambda tmp: torch.save({"state_dict": result.student.state_dict(), "meta": meta}, tmp)
    )
    return result.student.eval(), {**meta, "cache": str(path)}


def environment() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")]
    git_cmd = ["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty"]
    git = subprocess.run(git_cmd, capture_output=True, text=True).stdout.strip() or "unknown"
    versions = {m: importlib.metadata.version(m) for m in ("onnxruntime", "onnx", "torch", "numpy")}
    return {
        "cpu": names[0] if names else platform.processor() or "unknown",
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "flags": sorted(cpu_flags() & set(RELEVANT_FLAGS)),
        "python": platform.python_version(),
        **versions,
        "git": git,
    }


def measure(args: argparse.Namespace, paths: dict[str, Path]) -> list[dict[str, Any]]:
    """Interleaved timing: every repeat measures fp32 and int8 back to back, order alternating."""
    configs = [
        (int(b), int(t)) for b in args.batch_sizes.split(",") for t in args.threads.split(",")
    ]
    samples: dict[tuple[int, int, str], list[LatencyStats]] = {}
    for rep in range(args.repeats):
        order = ["fp32", "int8"] if rep % 2 == 0 else ["int8", "fp32"]
        for batch, threads in configs:
            settings = TimingSettings(
                batch_size=batch,
                intra_op_threads=threads,
                warmup_runs=20,
                min_iterations=200,
                min_seconds=args.min_seconds,
            )
            for kind in order:
                stats = measure_onnx(paths[kind], SHAPE, settings, percentile=90.0)
                samples.setdefault((batch, threads, kind), []).append(stats)
        print(f"  repeat {rep + 1}/{args.repeats} done, load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for batch, threads in configs:
        row: dict[str, Any] = {"batch": batch, "threads": threads}
        for kind in ("fp32", "int8"):
            runs = samples[(batch, threads, kind)]
            row[f"{kind}_p50"] = statistics.median(s.p50_ms for s in runs)
            row[f"{kind}_p90"] = statistics.median(s.p90_ms for s in runs)
            row[f"{kind}_median_run"] = sorted(runs, key=lambda s: s.p90_ms)[len(runs) // 2]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    args = parse_args(argv)
    env = environment()
    command = shlex.join(["python", *sys.argv])
    print(f"command: {command}\nenv: {json.dumps(env)}", flush=True)
    data = load_data(args)
    model, meta = get_student(args, data)
    work = args.cache_dir / ("int8_vs_fp32_smoke" if args.smoke else "int8_vs_fp32")
    paths = {"fp32": work / "fp32.onnx", "int8": work / "int8.onnx"}
    export_onnx(model, SHAPE, paths["fp32"], opset=18, metadata={"arch": args.arch})
    pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(1))
    calibration = normalize(data.train.images[pick[: args.calibration]], MEAN, STD).numpy()
    quant = quantize_int8(paths["fp32"], paths["int8"], calibration)
    print(f"quantized: {json.dumps(quant.to_dict())}", flush=True)

    labels = data.test.labels.numpy()
    logits = {k: onnx_logits(p, data.test.images, MEAN, STD) for k, p in paths.items()}
    top1 = {k: topk_accuracy(v, labels, 1) for k, v in logits.items()}
    agreement = float((logits["fp32"].argmax(1) == logits["int8"].argmax(1)).mean())
    load_before = os.getloadavg()
    rows = measure(args, paths)
    load_after = os.getloadavg()

    lines = [
        f"| batch | threads | fp32 p50 ms | fp32 p90 ms | int8 p50 ms | int8 p90 ms "
        f"| int8/fp32 p50 | int8/fp32 p90 | decide_int8 (gate {100 * MAX_TOP1_DROP:g} pt) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        reports = {
            k: VerifyReport(
                images=len(labels),
                student_top1=top1[k],
                student_top5=None,
                teacher_top1=None,
                top1_drop=None,
                parity=None,
                latency=row.pop(f"{k}_median_run"),
            )
            for k in ("fp32", "int8")
        }
        decision = decide_int8(reports["fp32"], reports["int8"], MAX_TOP1_DROP)
        row["decision"] = decision.to_dict()
        lines.append(
            f"| {row['batch']} | {row['threads']} | {row['fp32_p50']:.3f} | {row['fp32_p90']:.3f} "
            f"| {row['int8_p50']:.3f} | {row['int8_p90']:.3f} "
            f"| {row['int8_p50'] / row['fp32_p50']:.2f} | {row['int8_p90'] / row['fp32_p90']:.2f} "
            f"| {'int8' if decision.use_int8 else 'fp32'} |"
        )
    size = {k: p.stat().st_size for k, p in paths.items()}
    summary = [
        f"top-1 on {len(labels)} test images: fp32 {100 * top1['fp32']:.2f}%, "
        f"int8 {100 * top1['int8']:.2f}% (diff {100 * (top1['int8'] - top1['fp32']):+.2f} pt), "
        f"top-1 agreement {100 * agreement:.2f}%",
        f"model size: fp32 {size['fp32'] / 1024:.0f} KiB, int8 {size['int8'] / 1024:.0f} KiB",
        f"load average (1 min) before/after timing: {load_before[0]:.2f} / {load_after[0]:.2f} "
        f"on {env['cores']} cores",
        f"wall time: {(time.perf_counter() - started) / 60:.1f} min",
    ]
    print("\n" + "\n".join([*lines, "", *summary]))
    out = {
        "command": command,
        "env": env,
        "student": {"arch": args.arch, **meta},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "quantize": quant.to_dict(),
        "top1": top1,
        "agreement": agreement,
        "size_bytes": size,
        "load_before_after": [load_before[0], load_after[0]],
        "rows": rows,
    }
    write_json_atomic(work / "results.json", out)
    print(f"results: {work / 'results.json'}")


if __name__ == "__main__":
    main()
