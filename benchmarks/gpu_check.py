"""The Python steps of ``benchmarks/gpu_check.sh`` (see docs/throughput.md, "GPU check").

    python3 benchmarks/gpu_check.py unpack --pack P --dest D --out RES     # no torch import
    python3 benchmarks/gpu_check.py wheels --wheels D/wheels --dest SITE --out RES
    python3 benchmarks/gpu_check.py preflight --out RES
    python3 benchmarks/gpu_check.py precision|compiled_vs_eager|deterministic|teacher_cast \
        --data D/cifar10 --teacher D/teacher/cifar_resnet20_w32.pt --out RES [--device cuda]
    torchrun --nproc_per_node 2 benchmarks/gpu_check.py ddp --data ... --out RES
    python3 benchmarks/gpu_check.py summary --res RES --out OUT [--final]

Each step writes ``RES/<step>.json`` (``passed``, its ``checks`` and numbers; an exception is
recorded as ``error`` with its traceback) and exits 0 only when it passed. ``summary`` folds
them, the step table the shell script keeps (``RES/steps.tsv``) and the pytest JUnit file into
``OUT/summary.json``: one line per check, ``passed`` / ``failed`` / ``skipped: ...``; without
CUDA every GPU-only check is ``skipped: no CUDA`` and carries the result of running its code on
the CPU at tiny sizes (``cpu_plumbing``). Only APIs of torch 2.11 and older are used (the GPU
machine's version); torch is imported inside the steps, so ``unpack`` and ``summary`` start
in well under a second.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import traceback
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
STUDENT = "cifar_resnet8_w16"
# import name: (distribution, version) of the wheels the pack carries (torch_pruning 1.6.1
# says __version__ "1.6.0": the installed metadata is what counts)
WHEELS = {"torch_pruning": ("torch-pruning", "1.6.1")}
# In the order the shell script runs them; GPU-only checks are skipped without CUDA.
CHECKS = {
    "pack": False, "wheels": False, "preflight": False, "pytest_gpu": True, "precision": True,
    "compiled_vs_eager": True, "deterministic": True, "teacher_cast": True, "ddp": True,
    "throughput": True,
}  # fmt: skip
DISTRIBUTIONS = {  # versions recorded by preflight: name -> distributions that provide it
    "torchvision": ["torchvision"], "onnx": ["onnx"], "onnxscript": ["onnxscript"],
    "onnxruntime": ["onnxruntime", "onnxruntime-gpu"], "typer": ["typer"], "pytest": ["pytest"],
    "sklearn": ["scikit-learn"], "hypothesis": ["hypothesis"], "numpy": ["numpy"],
    "cv2": ["opencv-python-headless", "opencv-python", "opencv-contrib-python"],
    "torch_pruning": ["torch-pruning"], "triton": ["triton", "pytorch-triton"],
}  # fmt: skip
VERSIONS = ("python", "torch", "torch_cuda_build", "torchvision", "onnx", "onnxruntime", "pytest",
            "sklearn", "torch_pruning", "triton", "cudnn", "c_compiler")  # fmt: skip
NO_CUDA_NOTE = (
    "no CUDA: every GPU-only check is 'skipped: no CUDA'; its cpu_plumbing is the same code at "
    "tiny sizes on the CPU, a test of the plumbing only. Nothing here is a GPU result."
)
LOSS_FLOOR, TOP1_FLOOR = 0.01, 0.01  # precision tolerances never below 1% / 1 point
COMPILE_LOSS_TOLERANCE = 0.02  # compiled vs eager per-epoch training loss, relative


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _rel(a: float, b: float) -> float:
    """|a - b| relative to b."""
    return abs(a - b) / max(abs(b), 1e-12)


# --- setup: pack, wheels, environment -------------------------------------------------------


def unpack(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    args.dest.mkdir(parents=True, exist_ok=True)
    if shutil.which("tar"):  # 22,000 small files: GNU tar is about twice as fast as tarfile
        command = ["tar", "-xzf", str(args.pack), "-C", str(args.dest), "--no-same-owner"]
        subprocess.run(command, check=True, timeout=120)
    else:
        with tarfile.open(args.pack) as tar:
            tar.extractall(args.dest, filter="data")
    manifest = _read(args.dest / "MANIFEST.json") or {}
    counts = {
        split: sum(1 for _ in (args.dest / "cifar10" / split).rglob("*.jpg"))
        for split in ("train", "test")
    }
    teacher = args.dest / (manifest.get("teacher") or {}).get("path", "teacher/missing.pt")
    wheels = sorted(p.name for p in (args.dest / "wheels").glob("*.whl"))
    checks = {
        "manifest_read": bool(manifest),
        "cifar10_counts_match": counts == manifest.get("cifar10"),
        "teacher_present": teacher.is_file(),
        "wheels_present": wheels == sorted(manifest.get("wheels") or ["?"]),
    }
    return {
        "passed": all(checks.values()), "checks": checks, "pack": str(args.pack),
        "pack_mib": round(args.pack.stat().st_size / 2**20, 2), "cifar10": counts,
        "teacher": manifest.get("teacher"), "wheels": wheels,
        "seconds": round(time.perf_counter() - began, 1),
    }  # fmt: skip


def wheels(args: argparse.Namespace) -> dict[str, Any]:
    """Install the packed wheels offline into ``--dest`` (pip; unzip if pip is unusable) and
    check, in a fresh interpreter with ``--dest`` on the path, that each is found there with
    its version (preflight then imports them)."""
    began = time.perf_counter()
    found = sorted(str(p) for p in args.wheels.glob("*.whl"))
    command = [
        sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
        "--no-cache-dir", "--upgrade", "--target", str(args.dest), *found,
    ]  # fmt: skip
    pip = subprocess.run(command, capture_output=True, text=True, timeout=120)
    how = "pip"
    if pip.returncode != 0:  # pure-Python wheels: installing is unzipping
        how = "unzip (pip failed)"
        for wheel in found:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(args.dest)
    env = {**os.environ, "PYTHONPATH": f"{args.dest}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    probe = (  # where each would be imported from, and its installed version (preflight
        # imports them: importing torch twice would cost seconds here)
        "import importlib.util as u, importlib.metadata as md, json, sys; pairs = sys.argv[1:];"
        "print(json.dumps({n: [md.version(d), u.find_spec(n).origin] "
        "for n, d in zip(pairs[::2], pairs[1::2])}))"
    )
    names = [x for name, (dist, _) in WHEELS.items() for x in (name, dist)]
    imported = subprocess.run(
        [sys.executable, "-c", probe, *names], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    try:
        modules = json.loads(imported.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        modules = {}
    checks = {"wheels_found": bool(found)}
    for name, (_, version) in WHEELS.items():
        got = modules.get(name) or [None, ""]
        checks[f"{name}_{version}_from_pack"] = got[0] == version and got[1].startswith(
            str(args.dest)
        )
    return {
        "passed": all(checks.values()), "checks": checks, "how": how, "target": str(args.dest),
        "command": " ".join(command[:11]) + " <dir> <wheels>", "wheels": found,
        "modules": modules, "pip_stderr": pip.stderr[-2000:],
        "import_stderr": imported.stderr[-2000:], "seconds": round(time.perf_counter() - began, 1),
    }  # fmt: skip


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def preflight(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    for name, dists in DISTRIBUTIONS.items():  # installed metadata: no slow imports
        env[name] = next((v for v in map(_version, dists) if v), None)
    # triton builds its launchers with a C compiler: without one, torch.compile fails on CUDA
    env["c_compiler"] = next(filter(None, map(shutil.which, ("cc", "gcc", "clang"))), None)
    if env["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            bf16=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
        )
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        env["nvidia_smi"] = (smi.stdout or smi.stderr).strip()
        smi_sees_gpu = smi.returncode == 0 and len(smi.stdout.strip().splitlines()) >= 2
    except (OSError, subprocess.TimeoutExpired) as exc:
        env["nvidia_smi"] = f"unavailable: {exc}"
        smi_sees_gpu = False
    checks = {
        "torch_imports": True,
        "project_imports": _project_imports(),
        "torch_sees_the_gpu_nvidia_smi_lists": env["cuda_available"] or not smi_sees_gpu,
    }
    return {"passed": all(checks.values()), "checks": checks, "env": env}


def _project_imports() -> bool:
    """The whole CLI and the pruning module, as the GPU machine's python sees them."""
    for name in ("compressor.cli.main", "compressor.models.pruning", "torch_pruning"):
        importlib.import_module(name)
    return True


# --- shared pieces of the training checks ----------------------------------------------------


def _device(args: argparse.Namespace):
    import torch

    return torch.device(args.device)


def _splits(data: Path, train: int, val: int):
    """A seeded subset of the packed training images: ``train`` for training, the next ``val``
    for validation (and as the unused test split). Decoded through the data cache
    (``COMPRESSOR_CACHE_DIR``): the checks with the same sizes decode once."""
    import torch

    from compressor.data.splits import DatasetSplits, decode_images, scan_image_folder
    from compressor.files import default_cache_dir

    classes, files = scan_image_folder(data / "train")
    pick = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
    cache = default_cache_dir()
    tr, _ = decode_images([files[i] for i in pick[:train]], 3, (32, 32), cache)
    va, _ = decode_images([files[i] for i in pick[train : train + val]], 3, (32, 32), cache)
    return DatasetSplits(tr, va, va, classes, str(data), "validation images (not used)")


def _teacher(path: Path):
    """The packed, trained teacher: a compressor bundle loaded with weights_only=True."""
    from compressor.models.checkpoint import load_bundle

    return load_bundle(path).model


def _student(seed: int):
    import torch

    from compressor.models.registry import build_model

    torch.manual_seed(seed)
    return build_model(STUDENT, 10, 3)


class MissingInterface(RuntimeError):
    """compressor does not (yet) have the API the check is written against."""


def _cfg(args: argparse.Namespace, **changes: Any):
    from compressor.train.loop import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    missing = sorted(set(changes) - names)
    if missing:
        raise MissingInterface(f"compressor.train.loop.TrainConfig has no field {missing}")
    base = {"epochs": args.epochs, "batch_size": 128, "lr": 0.05, "device": args.device}
    return TrainConfig(**{**base, **changes})


def _distill(args: argparse.Namespace, teacher, student, splits, checkpoint=None, **changes):
    from compressor.losses.total import LossConfig
    from compressor.train.loop import distill

    cfg = _cfg(args, **changes)
    return distill(teacher, student, splits, MEAN, STD, LossConfig(), cfg, checkpoint=checkpoint)


def _curve(result) -> dict[str, Any]:
    history = result.history
    return {
        "loss": [r["loss"] for r in history],
        "val_top1": [r["val_top1"] for r in history],
        "epoch_seconds": [round(r["seconds"], 3) for r in history],
        "best_val_top1": result.best_val_top1,
        "teacher_val_top1": result.teacher_val_top1,
        "step": result.step,
    }


def _weights_sha(module) -> str:
    """sha256 over every tensor of the state dict (parameters and buffers), bit for bit."""
    import torch

    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        flat = value.detach().cpu().contiguous().reshape(-1)
        h.update(name.encode())
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


def _tf32() -> dict[str, bool]:
    import torch

    return {
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


# --- item 4: bf16 vs fp32 with a trained teacher and a measured tolerance ----------------------


def precision(args: argparse.Namespace) -> dict[str, Any]:
    """bf16 vs fp32 with the packed trained teacher. (1) the loss of the same weights on the
    same batches under both (within 2%); (2) seed-matched training: fp32 seed 0 vs fp32 seed 1
    is the run-to-run spread, and bf16 seed 0 must be within max(2 x spread, floor) of fp32
    seed 0, per epoch, in training loss and in validation top-1."""
    import torch

    from compressor.compute.speed import autocast
    from compressor.data.splits import normalize
    from compressor.losses.total import DistillationLoss, LossConfig

    device, low = _device(args), args.low_precision
    low_key = low if low != "fp32" else "fp32_again"  # fp32 twice: the CPU plumbing run
    splits = _splits(args.data, args.train, args.val)
    teacher = _teacher(args.teacher).to(device).eval()
    student = _student(0).to(device).train()
    loss_fn = DistillationLoss(LossConfig(), 10)
    forward = []
    batch = min(256, len(splits.train))
    with torch.no_grad():
        for start in range(0, min(8 * batch, len(splits.train) - batch + 1), batch):
            x = normalize(splits.train.images[start : start + batch].to(device), MEAN, STD)
            y = splits.train.labels[start : start + batch].to(device)
            losses = {}
            for name in ("fp32", low_key):
                with autocast(device, low if name == low_key else name):
                    s, t = student(x), teacher(x)
                    losses[name] = float(loss_fn(s.float(), t.float(), y, 0).loss)
            forward.append(losses)
    forward_rel = max(_rel(f[low_key], f["fp32"]) for f in forward)

    runs = {}
    low_run = f"{low_key}_seed0"
    for name, prec, seed in (("fp32_seed0", "fp32", 0), ("fp32_seed1", "fp32", 1),
                             (low_run, low, 0)):  # fmt: skip
        result = _distill(
            args, _teacher(args.teacher), _student(seed), splits, precision=prec, seed=seed,
            compile=False,
        )  # fmt: skip
        runs[name] = _curve(result)
        print(f"{name}: loss {runs[name]['loss']} val {runs[name]['val_top1']}", flush=True)
    a, b, c = runs["fp32_seed0"], runs["fp32_seed1"], runs[low_run]
    spread_loss = max(_rel(x, y) for x, y in zip(b["loss"], a["loss"], strict=True))
    spread_top1 = max(abs(x - y) for x, y in zip(b["val_top1"], a["val_top1"], strict=True))
    bf16_loss = max(_rel(x, y) for x, y in zip(c["loss"], a["loss"], strict=True))
    bf16_top1 = max(abs(x - y) for x, y in zip(c["val_top1"], a["val_top1"], strict=True))
    tol_loss = max(2 * spread_loss, LOSS_FLOOR)
    tol_top1 = max(2 * spread_top1, TOP1_FLOOR)
    checks = {
        "forward_loss_within_2pct": forward_rel < 0.02,
        "training_loss_within_tolerance": bf16_loss <= tol_loss,
        "val_top1_within_tolerance": bf16_top1 <= tol_top1,
        f"{low}_run_was_{low}": c["step"].get("precision") == low,
        "losses_finite": all(math.isfinite(v) for r in runs.values() for v in r["loss"]),
    }
    return {
        "passed": all(checks.values()),
        "checks": checks,
        "teacher": str(args.teacher),
        "teacher_val_top1": a["teacher_val_top1"],
        "train_images": len(splits.train),
        "val_images": len(splits.val),
        "epochs": args.epochs,
        "forward_losses": forward,
        "forward_max_relative_difference": forward_rel,
        "fp32_spread": {"loss_relative": spread_loss, "val_top1": spread_top1},
        "tolerance": {
            "loss_relative": tol_loss,
            "val_top1": tol_top1,
            "rule": f"max(2 x fp32 seed-0-vs-seed-1 spread, floor {LOSS_FLOOR} / {TOP1_FLOOR})",
        },
        f"{low}_vs_fp32_seed0": {"loss_relative": bf16_loss, "val_top1": bf16_top1},
        "tf32": _tf32(),
        "runs": runs,
    }


# --- (a) compiled vs eager --------------------------------------------------------------------


def compiled_vs_eager(args: argparse.Namespace) -> dict[str, Any]:
    """Same seed, ``compile=False`` vs ``compile=None`` (auto: CUDA graphs via torch.compile
    mode "reduce-overhead" on CUDA with static shapes, eager on CPU): per-epoch training losses
    within max(2%, 2 x the precision check's fp32 spread), and seconds per epoch after the first
    (which compiles) of each."""
    splits = _splits(args.data, args.train, args.val)
    runs = {}
    for name, mode in (("eager", False), ("auto", None)):
        runs[name] = _curve(
            _distill(args, _teacher(args.teacher), _student(0), splits, compile=mode)
        )
        print(f"{name}: {runs[name]['loss']} {runs[name]['epoch_seconds']}", flush=True)
    eager, auto = runs["eager"], runs["auto"]
    spread = ((_read(args.out / "precision.json") or {}).get("fp32_spread") or {}).get(
        "loss_relative"
    )
    tolerance = max(COMPILE_LOSS_TOLERANCE, 2 * spread if spread else 0.0)
    loss_rel = max(_rel(x, y) for x, y in zip(auto["loss"], eager["loss"], strict=True))
    steady = {k: statistics.median(r["epoch_seconds"][1:] or r["epoch_seconds"])
              for k, r in runs.items()}  # fmt: skip
    cuda = _device(args).type == "cuda"
    expected_auto = "reduce-overhead" if cuda else None
    checks = {
        "losses_agree": loss_rel <= tolerance,
        "step_reports_compile_mode": all("compile_mode" in r["step"] for r in runs.values()),
        "eager_run_is_eager": eager["step"].get("compile_mode") is None,
        f"auto_is_{expected_auto or 'eager'}_on_{'cuda' if cuda else 'cpu'}": auto["step"].get(
            "compile_mode"
        )
        == expected_auto,
    }
    return {
        "passed": all(checks.values()),
        "checks": checks,
        "train_images": len(splits.train),
        "epochs": args.epochs,
        "loss_max_relative_difference": loss_rel,
        "loss_tolerance": tolerance,
        "tolerance_rule": f"max({COMPILE_LOSS_TOLERANCE}, 2 x fp32 spread {spread})",
        "steady_epoch_seconds": steady,
        "eager_over_auto_seconds": steady["eager"] / max(steady["auto"], 1e-9),
        "auto_compile_mode": auto["step"].get("compile_mode"),
        "auto_eager_reason": auto["step"].get("eager_reason"),
        "runs": runs,
    }


# --- (b) deterministic ------------------------------------------------------------------------


def _flags() -> dict[str, Any]:
    import torch

    return {
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def deterministic(args: argparse.Namespace) -> dict[str, Any]:
    """Two runs with ``deterministic=True`` and the same seed: identical per-epoch losses,
    validation accuracy and final weights; the cuDNN/determinism flags are back to what they
    were before each run (two different starting states are tried)."""
    import torch

    splits = _splits(args.data, args.train, args.val)
    runs, flags = {}, {}
    for name, benchmark in (("first", False), ("second", True)):
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.deterministic = False
        before = _flags()
        result = _distill(
            args, _teacher(args.teacher), _student(0), splits, deterministic=True, compile=False
        )
        flags[name] = {"before": before, "after": _flags()}
        runs[name] = {**_curve(result), "weights_sha256": _weights_sha(result.student)}
        print(f"{name}: {runs[name]['loss']}", flush=True)
    first, second = runs["first"], runs["second"]
    checks = {
        "identical_losses": first["loss"] == second["loss"],
        "identical_val_top1": first["val_top1"] == second["val_top1"],
        "identical_weights": first["weights_sha256"] == second["weights_sha256"],
        "flags_restored": all(f["before"] == f["after"] for f in flags.values()),
        "step_reports_deterministic": all(
            r["step"].get("deterministic") is True for r in runs.values()
        ),
    }
    return {
        "passed": all(checks.values()), "checks": checks, "flags": flags,
        "train_images": len(splits.train), "epochs": args.epochs, "runs": runs,
    }  # fmt: skip


# --- (c) the teacher passed in stays fp32 -----------------------------------------------------


def _script(teacher, example):
    import torch

    try:
        return torch.jit.script(teacher), "torch.jit.script"
    except Exception as exc:  # fall back to tracing, and say why
        print(f"torch.jit.script failed ({type(exc).__name__}); tracing", flush=True)
        return torch.jit.trace(teacher, example), "torch.jit.trace"


def teacher_cast(args: argparse.Namespace) -> dict[str, Any]:
    """bf16 distillation with a TorchScript teacher and with a plain eager teacher: afterwards
    every parameter and floating buffer of the object passed in is still float32, and
    ``predict_logits(teacher.cpu(), ...)`` runs on the CPU in fp32 with the logits it gave
    before the run."""
    import torch

    from compressor.compute.inference import predict_logits
    from compressor.data.splits import normalize

    cpu = torch.device("cpu")
    splits = _splits(args.data, args.train, args.val)
    images = splits.val.images[:256]
    eager = _teacher(args.teacher).eval()
    example = normalize(images[:8], MEAN, STD)
    scripted, how = _script(copy.deepcopy(eager).eval(), example)
    rows, checks = {}, {}
    for name, teacher in (("torchscript", scripted), ("eager", eager)):
        before = predict_logits(teacher, images, MEAN, STD, cpu)
        result = _distill(
            args, teacher, _student(0), splits, precision=args.low_precision, compile=False
        )
        floats = [*teacher.parameters(), *(b for b in teacher.buffers() if b.is_floating_point())]
        dtypes = sorted({str(t.dtype) for t in floats})
        after = predict_logits(teacher.cpu(), images, MEAN, STD, cpu)
        diff = float((after - before).abs().max())
        checks[f"{name}_params_fp32"] = dtypes == ["torch.float32"]
        checks[f"{name}_predict_on_cpu_fp32"] = (
            after.dtype == torch.float32 and bool(torch.isfinite(after).all())
            and tuple(after.shape) == (len(images), 10)
        )  # fmt: skip
        checks[f"{name}_logits_unchanged"] = diff <= 1e-4
        rows[name] = {
            "dtypes_after": dtypes, "logits_max_abs_change": diff,
            "step": result.step, "loss": [r["loss"] for r in result.history],
        }  # fmt: skip
        print(f"{name}: {rows[name]}", flush=True)
    return {
        "passed": all(checks.values()), "checks": checks, "torchscript_by": how,
        "train_images": len(splits.train), "epochs": args.epochs, "teachers": rows,
    }  # fmt: skip


# --- (d) 2-rank DDP on one GPU ----------------------------------------------------------------


def ddp(args: argparse.Namespace) -> int:
    """Run under torchrun with 2 processes: both ranks share the one GPU (gloo backend)."""
    import torch
    import torch.distributed as dist

    from compressor.compute import distributed

    began = time.perf_counter()
    plan = distributed.plan_rank(args.device)
    dinfo = distributed.init_distributed(args.device)
    splits = _splits(args.data, args.train, args.val)
    ckpt = args.out / "ddp_state.pt"
    result = _distill(args, _teacher(args.teacher), _student(0), splits, ckpt, compile=False)
    digest = _weights_sha(result.student)  # every tensor of the state dict, buffers too
    rank_row = {
        "rank": dinfo.rank, "device": result.device, "backend": plan.backend,
        "shares_gpu": plan.shares_gpu, "val_top1": [r["val_top1"] for r in result.history],
        "weights_sha256": digest,
        "buffers": sorted(n for n, _ in result.student.named_buffers())[:3],
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
            "ranks_same_weights_and_buffers": len({r["weights_sha256"] for r in rows}) == 1,
            "checkpoint_written": ckpt.is_file(),
            "on_the_requested_device": all(
                r["device"].startswith(torch.device(args.device).type) for r in rows
            ),
        }
        _write(
            args.out / "ddp.json",
            {
                "passed": all(checks.values()),
                "checks": checks,
                "ranks": rows,
                "step": result.step,
                "history": history,
                "train_images": len(splits.train),
                "seconds": round(time.perf_counter() - began, 1),
            },
        )
        ckpt.unlink(missing_ok=True)
        print(json.dumps(checks))
    distributed.shutdown()
    return 0


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


def _steps(res: Path) -> dict[str, dict[str, Any]]:
    steps: dict[str, dict[str, Any]] = {}
    table = res / "steps.tsv"
    if table.is_file():
        for line in table.read_text().splitlines():
            name, rc, seconds, limit = line.split("\t")
            steps[name] = {
                "rc": int(rc), "seconds": int(seconds), "limit_s": int(limit),
                "timed_out": int(rc) in (124, 137),
            }  # fmt: skip
    return steps


def _outcome(step: dict[str, Any] | None, result: Any) -> dict[str, Any]:
    """One check's line: status passed / failed / skipped: budget spent / not run."""
    if step is None:
        return {"status": "not run"}
    if step["rc"] == 125:
        return {"status": "skipped: budget spent", **step}
    line: dict[str, Any] = dict(step)
    if isinstance(result, dict):
        line.update(result)
    ok = step["rc"] == 0 and isinstance(result, dict) and bool(result.get("passed"))
    if step["rc"] == 0 and not isinstance(result, dict):
        line["error"] = "exit 0 but no result file"
    if step["timed_out"]:
        line["error"] = f"timed out after {step['limit_s']} s"
    line["status"] = "passed" if ok else "failed"
    return line


def summary(args: argparse.Namespace) -> int:
    res, out = args.res, args.out
    steps = _steps(res)
    pre = _read(res / "preflight.json") or {}
    env = pre.get("env") or {}
    cuda = bool(env.get("cuda_available"))
    results: dict[str, Any] = {n: _read(res / f"{n}.json") for n in CHECKS}
    junit = _junit(res / "pytest_gpu.xml")
    if junit is not None:
        failed = junit["failures"] + junit["errors"]
        results["pytest_gpu"] = {"passed": failed == 0 and junit["tests"] > 0, "junit": junit}
    throughput = results.get("throughput")
    if isinstance(throughput, dict):  # distill_throughput.py's table: passed = it completed
        results["throughput"] = {"passed": bool(throughput.get("loops")), **throughput}
    checks: dict[str, Any] = {}
    for name, gpu_only in CHECKS.items():
        line = _outcome(steps.get(name), results.get(name))
        if gpu_only and not cuda and line["status"] != "not run":
            plumbing = line
            line = {
                "status": "skipped: no CUDA",
                "cpu_plumbing": {"status": plumbing.pop("status"), **plumbing},
            }
        elif gpu_only and not cuda:
            line = {"status": "skipped: no CUDA", "cpu_plumbing": {"status": "not run"}}
        checks[name] = line
    ran = [c.get("cpu_plumbing", c) for c in checks.values()]
    failed = [
        name
        for name, c in zip(checks, ran, strict=True)
        if c["status"] != "passed" and (args.final or c["status"] != "not run")
    ]
    payload: dict[str, Any] = {
        # without CUDA nothing GPU-only was measured: never "passed", whatever the plumbing did
        "status": "failed" if failed else ("passed" if cuda else "no CUDA: GPU checks skipped"),
        "complete": bool(args.final) and not (res / "interrupted").exists(),
        "interrupted": (res / "interrupted").exists(),
        "cuda": cuda,
        "gpu": env.get("gpu"),
        "note": None if cuda else NO_CUDA_NOTE,
        "failed": failed,
        "versions": {k: env.get(k) for k in VERSIONS},
        "budget_s": args.budget_s,
        "total_seconds": args.total_seconds,
        "checks": checks,
        "env": env,
    }
    _write(out / "summary.json", payload)
    if args.final:
        lines = [f"  {n}: {c['status']}"
                 + (f" (cpu plumbing: {c['cpu_plumbing']['status']})" if "cpu_plumbing" in c
                    else "") for n, c in checks.items()]  # fmt: skip
        print("gpu_check summary:\n" + "\n".join(lines))
        print(f"gpu_check: {payload['status']} in {args.total_seconds} s; {out / 'summary.json'}")
    return 0 if not failed else 1


# --- main -------------------------------------------------------------------------------------

RESULT_STEPS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "unpack": unpack, "wheels": wheels, "preflight": preflight, "precision": precision,
    "compiled_vs_eager": compiled_vs_eager, "deterministic": deterministic,
    "teacher_cast": teacher_cast,
}  # fmt: skip
JSON_NAME = {"unpack": "pack"}


def _run_step(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    try:
        payload = RESULT_STEPS[args.step](args)
    except Exception as exc:  # recorded in the step's JSON, exit 1
        traceback.print_exc()
        payload = {
            "passed": False, "error": f"{type(exc).__name__}: {exc}",
            "missing_interface": isinstance(exc, MissingInterface),
            "traceback": traceback.format_exc()[-4000:],
        }  # fmt: skip
    payload.setdefault("seconds", round(time.perf_counter() - began, 1))
    _write(args.out / f"{JSON_NAME.get(args.step, args.step)}.json", payload)
    print(json.dumps({"passed": payload["passed"], "checks": payload.get("checks"),
                      "error": payload.get("error")}))  # fmt: skip
    return 0 if payload["passed"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=[*RESULT_STEPS, "ddp", "summary"])
    parser.add_argument("--out", type=Path, required=True, help="results folder (RES)")
    parser.add_argument("--res", type=Path, help="summary: the results folder")
    parser.add_argument("--pack", type=Path)
    parser.add_argument("--dest", type=Path)
    parser.add_argument("--wheels", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--teacher", type=Path)
    parser.add_argument("--train", type=int, default=8000, help="training images")
    parser.add_argument("--val", type=int, default=1000, help="validation images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="cpu only for the plumbing run")
    parser.add_argument(
        "--low-precision", default="bf16", help="fp32 for the CPU plumbing run (no bf16 units)"
    )
    parser.add_argument("--final", action="store_true")
    parser.add_argument("--budget-s", type=int)
    parser.add_argument("--total-seconds", type=int)
    args = parser.parse_args()
    if args.step == "summary":
        return summary(args)
    if args.step == "ddp":
        return ddp(args)
    return _run_step(args)


if __name__ == "__main__":
    sys.exit(main())
