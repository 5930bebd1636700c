"""Bias-aware distillation on CIFAR-10: CE vs KD vs DKD, each with and without bias-awareness.

Trains a teacher once (cached outside git), then distils the same student architecture with every
row over several seeds and prints mean +- std test top-1, the signed gap student - teacher, and
the teacher's training-set error (the bias that bias-aware distillation tries to remove)::

    python benchmarks/bias_kd_cifar10.py --preset cpu   # 40-60 min on a shared 2-core CPU
    python benchmarks/bias_kd_cifar10.py --preset gpu   # one H100/H200, full 45k train split
    python benchmarks/bias_kd_cifar10.py --smoke        # minutes: checks the script only

Model selection (best epoch) uses the validation split carved from train/, never test/.
A student seed fixes its initial weights, batch order and augmentation, so rows are paired.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision

from compressor.compute.inference import predict_logits, resolve_device, top1
from compressor.data.splits import DatasetSplits, Split, load_image_folder, stratified_split
from compressor.losses.total import LossConfig
from compressor.models.registry import build_model, count_params
from compressor.train.loop import TrainConfig, distill

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
DATA_SEED = 0  # fixes the val carve-out and the train subset, shared by teacher and students
ROWS = ("ce", "kd", "kd+bias", "dkd", "dkd+bias")
BASE = {"kd+bias": "kd", "dkd+bias": "dkd"}
PRESETS: dict[str, dict[str, Any]] = {
    # Sized from a 1-epoch probe on a shared, loaded 2-core AMD EPYC: see docs/benchmarks.md.
    # One torch thread: with other jobs running, 2 OpenMP threads ran 4x slower than 1.
    "cpu": dict(train_size=5000, val_size=2000, test_size=None, epochs=10, teacher_epochs=20,
                teacher_arch="cifar_resnet14_w16", student_arch="cifar_resnet8_w8",
                seeds=3, batch_size=64, lr=0.05, threads=1),
    # Estimated (NOT measured yet) at 4-8 minutes on one H100/H200; full 45k train, 5k val.
    "gpu": dict(train_size=None, val_size=None, test_size=None, epochs=20, teacher_epochs=30,
                teacher_arch="cifar_resnet32_w32", student_arch="cifar_resnet8_w16",
                seeds=3, batch_size=256, lr=0.1, threads=None),
    "smoke": dict(train_size=400, val_size=200, test_size=500, epochs=2, teacher_epochs=2,
                  teacher_arch="cifar_resnet8_w8", student_arch="cifar_resnet8_w8",
                  seeds=2, batch_size=64, lr=0.05, threads=None),
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--smoke", action="store_true", help="same as --preset smoke")
    p.add_argument("--data", type=Path, default=Path("/work/shared/datasets/cifar10"))
    p.add_argument("--cache-dir", type=Path, default=Path("~/.cache/compressor-bench"))
    p.add_argument("--out", type=Path, help="results JSON (default: <cache-dir>/<name>.json)")
    p.add_argument("--rows", type=lambda s: s.split(","), default=list(ROWS), help=",".join(ROWS))
    p.add_argument("--device", default="auto")
    p.add_argument("--fresh", action="store_true", help="do not reuse finished runs from --out")
    p.add_argument("--loss", action="append", default=[], help="LossConfig KEY=VALUE override")
    for key, value in PRESETS["cpu"].items():  # every preset setting can be overridden
        kind = str if isinstance(value, str) else float if isinstance(value, float) else int
        p.add_argument("--" + key.replace("_", "-"), type=kind, help="overrides the preset")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset = "smoke"
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    bad = [r for r in args.rows if r not in ROWS]
    if bad:
        p.error(f"unknown rows {bad}; choose from {','.join(ROWS)}")
    args.cache_dir = args.cache_dir.expanduser()
    return args


def loss_configs(args: argparse.Namespace) -> dict[str, LossConfig]:
    """One LossConfig per row. DKD's warm-up is the product's: it scales with the epochs."""
    defaults = dataclasses.asdict(LossConfig())
    overrides: dict[str, Any] = {}
    for item in args.loss:
        key, _, value = item.partition("=")
        if key not in defaults or key in ("method", "bias_aware"):
            raise SystemExit(f"--loss: unknown or fixed key {key!r}")
        overrides[key] = (int if defaults[key] is None else type(defaults[key]))(value)
    return {
        "ce": LossConfig(method="ce", bias_aware=False),
        "kd": LossConfig(method="kd", bias_aware=False, **overrides),
        "kd+bias": LossConfig(method="kd", bias_aware=True, **overrides),
        "dkd": LossConfig(method="dkd", bias_aware=False, **overrides),
        "dkd+bias": LossConfig(method="dkd", bias_aware=True, **overrides),
    }


def progress(tag: str) -> Callable[[dict[str, Any]], None]:
    """A one-line-per-epoch log for ``distill(on_epoch=...)``."""

    def log(r: dict[str, Any]) -> None:
        print(f"  {tag} epoch {r['epoch']}: train {r['train_top1']:.3f}, val {r['val_top1']:.3f}, "
              f"{r['seconds']:.0f}s", flush=True)  # fmt: skip

    return log


def subsample(split: Split, size: int | None, seed: int) -> Split:
    """A stratified, seeded subset of ``size`` images (the whole split when size is None)."""
    if size is None or size >= len(split):
        return split
    _, keep = stratified_split(split.labels, size / len(split), seed)
    return Split(split.images[keep], split.labels[keep])


def load_data(args: argparse.Namespace) -> DatasetSplits:
    """CIFAR-10 as uint8 tensors; the 60k JPEGs are decoded once and cached in --cache-dir."""
    cache = args.cache_dir / f"cifar10_u8_valseed{DATA_SEED}.pt"
    full = torch.load(cache, weights_only=False) if cache.exists() else None  # our own file
    if full is None or full.root != str(args.data.resolve()):
        print(f"decoding {args.data} (once; cached in {cache}) ...", flush=True)
        full = load_image_folder(args.data.resolve(), (3, 32, 32), seed=DATA_SEED, val_fraction=0.1)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(full, cache)
    return dataclasses.replace(
        full,
        train=subsample(full.train, args.train_size, DATA_SEED),
        val=subsample(full.val, args.val_size, DATA_SEED),
        test=subsample(full.test, args.test_size, DATA_SEED),
    )


def get_teacher(args: argparse.Namespace, data: DatasetSplits) -> tuple[torch.nn.Module, dict]:
    """Train the teacher (plain CE) once per setting, or load it from the cache."""
    name = (
        f"teacher_{args.teacher_arch}_n{len(data.train)}_v{len(data.val)}_e{args.teacher_epochs}"
        f"_b{args.batch_size}_lr{args.lr}_s{DATA_SEED}.pt"
    )
    path = args.cache_dir / name
    torch.manual_seed(DATA_SEED)
    model = build_model(args.teacher_arch, len(data.class_names), 3)
    if path.exists():
        saved = torch.load(path)
        model.load_state_dict(saved["state_dict"])
        print(f"teacher loaded from {path}", flush=True)
        return model, saved["meta"]
    print(f"training teacher {args.teacher_arch} for {args.teacher_epochs} epochs ...", flush=True)
    cfg = TrainConfig(
        args.teacher_epochs, args.batch_size, args.lr, seed=DATA_SEED, device=args.device
    )
    ce = LossConfig("ce", bias_aware=False)
    result = distill(None, model, data, MEAN, STD, ce, cfg, progress("teacher"))
    meta = {k: getattr(result, k) for k in ("seconds", "best_epoch", "best_val_top1", "device")}
    torch.save({"state_dict": result.student.state_dict(), "meta": meta}, path)
    return result.student, meta


def environment(device: torch.device) -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")]
    cpu = names[0] if names else platform.processor() or "unknown"
    git_cmd = ["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty"]
    git = subprocess.run(git_cmd, capture_output=True, text=True).stdout.strip() or "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "compressor": importlib.metadata.version("compressor"),
        "git": git,
    }


def accuracy(model: torch.nn.Module, split: Split, device: torch.device) -> float:  # moves model
    return top1(predict_logits(model.to(device), split.images, MEAN, STD, device), split.labels)


def fmt(values: list[float], sign: str = "") -> str:
    """Mean ± sample std in percent."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):{sign}6.2f} ± {100 * sd:4.2f}"


def report(out: dict[str, Any]) -> str:
    """The results table as text (percentages)."""
    t, env, s = out["teacher"], out["env"], out["settings"]
    lines = [
        f"command: {out['command']}",
        f"hardware: {env['cpu']}, {env['cores']} cores ({env['torch_threads']} torch threads), "
        f"GPU: {env['gpu'] or 'none'}",
        f"versions: python {env['python']}, torch {env['torch']}, torchvision "
        f"{env['torchvision']}, compressor {env['compressor']} (git {env['git']})",
        f"data: train {s['train']} / val {s['val']} / test {s['test']} images; student "
        f"{s['student_arch']} ({s['student_params']} params) {s['epochs']} epochs; teacher "
        f"{s['teacher_arch']} ({s['teacher_params']} params) {s['teacher_epochs']} epochs",
        f"teacher: test top-1 {100 * t['test_top1']:.2f}%, training-set error "
        f"{100 * t['train_error']:.2f}% ({t['train_wrong']} of {s['train']} train images wrong)",
        "",
        f"{'row':<9} {'test top-1 % (mean ± std)':>26} {'n':>2} {'student-teacher':>15} "
        f"{'vs base (paired)':>18}  per seed",
    ]
    by_row: dict[str, dict[int, float]] = {}
    for run in out["runs"]:
        by_row.setdefault(run["row"], {})[run["seed"]] = run["test_top1"]
    for row in [r for r in ROWS if r in by_row]:
        accs = by_row[row]
        values = [accs[k] for k in sorted(accs)]
        gap = [v - t["test_top1"] for v in values]
        vs_base = ""
        if row in BASE and BASE[row] in by_row:
            common = [k for k in accs if k in by_row[BASE[row]]]
            if common:
                vs_base = fmt([accs[k] - by_row[BASE[row]][k] for k in common], "+")
        lines.append(
            f"{row:<9} {fmt(values):>26} {len(values):>2} {fmt(gap, '+'):>15} "
            f"{vs_base:>18}  " + " ".join(f"{100 * v:.2f}" for v in values)
        )
    lines.append(
        f"wall time: {out['wall_seconds'] / 60:.1f} min this invocation; "
        f"{sum(r['seconds'] for r in out['runs']) / 60:.1f} min in student runs"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = load_data(args)
    configs = loss_configs(args)
    teacher, teacher_meta = get_teacher(args, data)
    teacher_test = accuracy(teacher, data.test, device)
    train_pred = predict_logits(teacher, data.train.images, MEAN, STD, device).argmax(1)
    train_wrong = int((train_pred != data.train.labels).sum())
    settings = {
        **{k: getattr(args, k) for k in PRESETS["cpu"]}, "seeds": list(range(args.seeds)),
        "train": len(data.train), "val": len(data.val), "test": len(data.test), "hflip": True,
        "data_seed": DATA_SEED, "student_params": count_params(build_model(args.student_arch, 10)),
        "teacher_params": count_params(teacher),
        "loss_configs": {row: dataclasses.asdict(c) for row, c in configs.items()},  # all rows
    }  # fmt: skip
    out_path = args.out or args.cache_dir / f"bias_kd_cifar10_{args.preset}.json"
    previous: dict[tuple[str, int], dict] = {}  # finished runs of an identical setting
    old = json.loads(out_path.read_text()) if out_path.exists() and not args.fresh else None
    if old and {**old["settings"], "seeds": None} == {**settings, "seeds": None}:
        previous = {(r["row"], r["seed"]): r for r in old["runs"]}
    out: dict[str, Any] = {
        "command": "python " + shlex.join(sys.argv),
        "env": environment(device),
        "settings": settings,
        "teacher": {**teacher_meta, "test_top1": teacher_test, "train_wrong": train_wrong},
        "runs": [r for (w, s), r in previous.items() if w not in args.rows or s >= args.seeds],
        "wall_seconds": 0.0,
    }
    out["teacher"]["train_error"] = train_wrong / len(data.train)
    print(f"teacher test top-1 {teacher_test:.4f}, train error {out['teacher']['train_error']:.4f}")
    for seed in range(args.seeds):
        for row in args.rows:
            if (row, seed) in previous:
                out["runs"].append(previous[(row, seed)])
                print(f"{row} seed {seed}: reused from {out_path}", flush=True)
                continue
            torch.manual_seed(seed)  # the same initial student weights for every row
            student = build_model(args.student_arch, len(data.class_names), 3)
            tc = TrainConfig(args.epochs, args.batch_size, args.lr, seed=seed, device=args.device)
            tag = f"{row} seed {seed}"
            result = distill(None if row == "ce" else teacher, student, data, MEAN, STD,
                             configs[row], tc, progress(tag))  # fmt: skip
            test = accuracy(result.student, data.test, device)
            out["runs"].append({"row": row, "seed": seed, "test_top1": test, **result.to_dict()})
            out["wall_seconds"] = time.perf_counter() - started
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(out, indent=1))
            print(f"{tag}: test {test:.4f}, val {result.best_val_top1:.4f} (epoch "
                  f"{result.best_epoch}), {result.seconds:.0f}s", flush=True)  # fmt: skip
    out["wall_seconds"] = time.perf_counter() - started
    out_path.write_text(json.dumps(out, indent=1))
    print("\n" + report(out) + f"\nresults: {out_path}")


if __name__ == "__main__":
    main()
