"""The Python steps of ``benchmarks/gpu_check.sh`` (see docs/throughput.md, "GPU check").

    python3 benchmarks/gpu_check.py preflight --out OUT        # exit 2 without CUDA
    torchrun --nproc_per_node 2 benchmarks/gpu_check.py ddp --data D --out OUT
    python3 benchmarks/gpu_check.py precision --data D --out OUT
    python3 benchmarks/gpu_check.py summary --out OUT

Each step writes ``OUT/<step>.json``; ``summary`` folds them, the step table the shell script
keeps (``OUT/steps.tsv``) and the pytest JUnit file into ``OUT/summary.json``. Only APIs of
torch 2.11 and older are used (the GPU machine's version).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import torch

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
TEACHER, STUDENT = "cifar_resnet20_w32", "cifar_resnet8_w16"


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- preflight --------------------------------------------------------------------------------


def preflight(args: argparse.Namespace) -> int:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    for name in ("torchvision", "onnx", "onnxruntime", "typer", "pytest"):
        try:
            module = __import__(name)
            env[name] = getattr(module, "__version__", "?")
        except ImportError:
            env[name] = None
    if env["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            bf16=torch.cuda.is_bf16_supported(),
        )
    _write(args.out / "env.json", env)
    print(json.dumps(env))
    if not env["cuda_available"]:
        print(
            f"gpu_check: no CUDA device visible to torch {torch.__version__} (CUDA build "
            f"{torch.version.cuda}); this check needs a GPU machine. Nothing else was run.",
            file=sys.stderr,
        )
        return 2
    return 0


# --- data -------------------------------------------------------------------------------------


def _splits(data: Path, train: int, val: int):
    """CIFAR-10 subset: the first ``train`` of a seeded order for training, next ``val`` for
    validation (decoded without the disk cache)."""
    from compressor.data import Split, load_image_folder

    full = load_image_folder(data, (3, 32, 32), seed=0, val_fraction=0.1, cache_dir=None)
    pick = torch.randperm(len(full.train), generator=torch.Generator().manual_seed(0))

    def take(idx: torch.Tensor) -> Split:
        return Split(full.train.images[idx], full.train.labels[idx])

    return dataclasses.replace(full, train=take(pick[:train]), val=take(pick[train : train + val]))


def _models(seed: int = 0):
    from compressor.students import build_model

    torch.manual_seed(seed)
    teacher = build_model(TEACHER, 10, 3)  # untrained: speed and agreement do not depend on it
    student = build_model(STUDENT, 10, 3)
    return teacher, student


# --- 2-rank DDP on one GPU --------------------------------------------------------------------


def ddp(args: argparse.Namespace) -> int:
    """Run under torchrun with 2 processes: both ranks share the one GPU (gloo backend)."""
    import torch.distributed as dist

    from compressor import distributed
    from compressor.distill import TrainConfig, distill
    from compressor.losses import LossConfig

    began = time.perf_counter()
    plan = distributed.plan_rank(args.device)
    dinfo = distributed.init_distributed(args.device)
    splits = _splits(args.data, args.train, 1000)
    teacher, student = _models()
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05, device=args.device)
    ckpt = args.out / "ddp_state.pt"
    result = distill(teacher, student, splits, MEAN, STD, LossConfig(), cfg, checkpoint=ckpt)
    checksum = torch.tensor(
        [float(sum(v.double().sum() for v in result.student.state_dict().values()))],
        dtype=torch.float64,
    )
    sums = [torch.zeros(1, dtype=torch.float64) for _ in range(dinfo.world_size)]
    dist.all_gather(sums, checksum)  # CPU tensors: gloo
    rank_row = {
        "rank": dinfo.rank, "device": result.device, "backend": plan.backend,
        "shares_gpu": plan.shares_gpu, "val_top1": [r["val_top1"] for r in result.history],
    }  # fmt: skip
    rows: list[Any] = [None] * dinfo.world_size
    dist.all_gather_object(rows, rank_row)
    if dinfo.is_main:
        history = result.history
        expected = (len(splits.train) // dinfo.world_size) * dinfo.world_size
        checks = {
            "world_size_2": result.world_size == 2,
            "every_epoch_saw_the_split": all(r["samples"] == expected for r in history),
            "losses_finite": all(math.isfinite(r["loss"]) for r in history),
            "ranks_same_validation": len({json.dumps(r["val_top1"]) for r in rows}) == 1,
            "ranks_same_weights": len({float(s) for s in sums}) == 1,
            "checkpoint_written": ckpt.is_file(),
        }
        _write(
            args.out / "ddp.json",
            {
                "passed": all(checks.values()),
                "checks": checks,
                "ranks": rows,
                "step": result.step,
                "history": history,
                "seconds": time.perf_counter() - began,
            },
        )
        ckpt.unlink(missing_ok=True)  # 1 MB of weights: not worth bringing back
        print(json.dumps(checks))
    distributed.shutdown()
    return 0


# --- bf16 vs fp32 -----------------------------------------------------------------------------


def precision(args: argparse.Namespace) -> int:
    """The distillation loss under bf16 autocast vs fp32: same weights and batches (forward),
    then the same short training from the same start (per-epoch loss and accuracy)."""
    from compressor.accel import autocast
    from compressor.data import normalize
    from compressor.distill import TrainConfig, distill
    from compressor.losses import DistillationLoss, LossConfig

    began = time.perf_counter()
    device = torch.device(args.device)
    splits = _splits(args.data, args.train, 1000)
    teacher, student = _models()
    teacher, student = teacher.to(device).eval(), student.to(device).train()
    loss_fn = DistillationLoss(LossConfig(), 10)
    forward = []
    with torch.no_grad():
        for start in range(0, min(8 * 256, len(splits.train) - 255), 256):  # full batches
            x = normalize(splits.train.images[start : start + 256].to(device), MEAN, STD)
            y = splits.train.labels[start : start + 256].to(device)
            losses = {}
            for name in ("fp32", "bf16"):
                with autocast(device, name):
                    s, t = student(x), teacher(x)
                    losses[name] = float(loss_fn(s.float(), t.float(), y, 0).loss)
            forward.append(losses)
    rel = [abs(f["bf16"] - f["fp32"]) / max(abs(f["fp32"]), 1e-12) for f in forward]

    runs = {}
    for name in ("fp32", "bf16"):
        teacher, student = _models()
        cfg = TrainConfig(
            epochs=args.epochs, batch_size=128, lr=0.05, device=args.device, precision=name
        )
        result = distill(teacher, student, splits, MEAN, STD, LossConfig(), cfg)
        runs[name] = [(r["loss"], r["val_top1"]) for r in result.history]
    loss_rel = [
        abs(b[0] - a[0]) / max(abs(a[0]), 1e-12)
        for a, b in zip(runs["fp32"], runs["bf16"], strict=True)
    ]
    top1_gap = [abs(b[1] - a[1]) for a, b in zip(runs["fp32"], runs["bf16"], strict=True)]
    checks = {
        "forward_loss_within_2pct": max(rel) < 0.02,
        "training_loss_within_10pct": max(loss_rel) < 0.10,
        "val_top1_within_5pts": max(top1_gap) < 0.05,
    }
    _write(
        args.out / "precision.json",
        {
            "passed": all(checks.values()),
            "checks": checks,
            "forward_losses": forward,
            "forward_max_relative_difference": max(rel),
            "training": runs,
            "training_loss_max_relative_difference": max(loss_rel),
            "val_top1_max_gap": max(top1_gap),
            "seconds": time.perf_counter() - began,
        },
    )
    print(json.dumps(checks))
    return 0 if all(checks.values()) else 1


# --- summary ----------------------------------------------------------------------------------


def _junit(path: Path) -> dict[str, Any] | None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return {**counts, "failed": failed}


def summary(args: argparse.Namespace) -> int:
    out = args.out
    steps: dict[str, Any] = {}
    table = out / "steps.tsv"
    if table.is_file():
        for line in table.read_text().splitlines():
            name, rc, seconds, limit = line.split("\t")
            steps[name] = {
                "rc": int(rc), "seconds": int(seconds), "limit_s": int(limit),
                "timed_out": int(rc) in (124, 137), "log": f"{name}.log",
            }  # fmt: skip
    payload: dict[str, Any] = {
        "env": _read(out / "env.json"),
        "steps": steps,
        "pytest_gpu": _junit(out / "pytest-gpu.xml"),
        "ddp": _read(out / "ddp.json"),
        "precision": _read(out / "precision.json"),
        "throughput": _read(out / "throughput.json"),
        "total_seconds": args.total_seconds,
    }
    env = payload["env"] or {}
    all_ok = all(s["rc"] == 0 for s in steps.values())
    if args.rehearsal:
        payload["status"] = "rehearsal"  # CPU plumbing test: never a GPU result
        payload["rehearsal_steps_ok"] = all_ok
    elif not env.get("cuda_available"):
        payload["status"] = "no_cuda"
    else:
        payload["status"] = "passed" if all_ok else "failed"
    payload["passed"] = payload["status"] == "passed"
    _write(out / "summary.json", payload)
    print(f"gpu_check: {payload['status']}; summary in {out / 'summary.json'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["preflight", "ddp", "precision", "summary"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--train", type=int, default=4000, help="training images (ddp, precision)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--total-seconds", type=int)
    parser.add_argument("--device", default="cuda", help="cpu only for a rehearsal")
    parser.add_argument("--rehearsal", type=int, default=0)
    args = parser.parse_args()
    return {"preflight": preflight, "ddp": ddp, "precision": precision, "summary": summary}[
        args.step
    ](args)


if __name__ == "__main__":
    sys.exit(main())
