"""The distillation loop: devices, optimiser, schedule, validation-based model selection.

The loop never names a loss method: it calls a :class:`~compressor.losses.DistillationLoss`
and logs whatever terms the returned dict holds. The best epoch is chosen on the validation
split carved from the training data, never on the test split the report quotes.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor import distributed
from compressor.data import DatasetSplits, Split, augment, batches, normalize
from compressor.errors import CompressorError
from compressor.io import atomic_write
from compressor.losses import DistillationLoss, LossConfig, bias_weight


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (SGD with Nesterov momentum, cosine learning rate per step)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    hflip: bool = True
    augment: bool = True  # random crop (+ flip); off makes teacher logits constant per image
    cache_teacher: bool = True  # without augmentation, run the teacher once, not every step
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "eval_batch_size": self.eval_batch_size >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise CompressorError(f"invalid training setting {name}={getattr(self, name)!r}")


@dataclass
class DistillResult:
    """The trained student (best validation epoch) and what happened on the way."""

    student: nn.Module
    device: str
    best_epoch: int
    best_val_top1: float
    teacher_val_top1: float
    teacher_train_error: float
    teacher_train_error_per_class: list[float]
    teacher_train_confusion: list[list[int]]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int | None = None
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("student")
        return out


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, CPU otherwise; an explicit CUDA request must be met."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise CompressorError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CompressorError(f"device '{name}' requested but CUDA is not available")
    return device


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device | None = None,
    batch_size: int = 512,
) -> torch.Tensor:
    """Logits (N, classes) on CPU for uint8 images (N, C, H, W), in eval mode."""
    device = device or next(model.parameters()).device
    model = model.to(device)
    was_training = model.training
    model.eval()
    outs = [
        model(normalize(images[idx].to(device), mean, std)).float().cpu()
        for idx in batches(images.shape[0], batch_size)
    ]
    model.train(was_training)
    if not outs:
        return torch.zeros(0, 0)
    return torch.cat(outs)


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose argmax equals the label."""
    if labels.numel() == 0:
        return 0.0
    return float((logits.argmax(1) == labels).float().mean())


def per_class_error(predictions: torch.Tensor, labels: torch.Tensor, classes: int) -> list[float]:
    """Error rate of each class (0 for classes absent from ``labels``)."""
    wrong = torch.zeros(classes).index_add_(0, labels, (predictions != labels).float())
    count = torch.bincount(labels, minlength=classes).clamp_min(1).float()
    return (wrong / count).tolist()


def _teacher_statistics(
    teacher: nn.Module | None, data: DatasetSplits, mean: tuple[float, ...], std: tuple[float, ...],
    device: torch.device,
) -> dict[str, Any]:  # fmt: skip
    """How wrong the teacher is on the (un-augmented) training split: the bias to remove."""
    classes = len(data.class_names)
    labels = data.train.labels
    if teacher is None:  # supervised training: no teacher, so no bias to measure
        pred = labels.clone()
        val_top1 = 1.0
    else:
        pred = predict_logits(teacher, data.train.images, mean, std, device).argmax(1)
        val_top1 = top1(
            predict_logits(teacher, data.val.images, mean, std, device), data.val.labels
        )
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    return {
        "teacher_val_top1": val_top1,
        "teacher_train_error": 1.0 - float((pred == labels).float().mean()) if len(labels) else 0.0,
        "teacher_train_error_per_class": per_class_error(pred, labels, classes),
        "teacher_train_confusion": confusion.tolist(),
    }


def _save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: say so instead of a traceback
        raise CompressorError(f"cannot resume from {path}: {exc}") from exc


def distill(
    teacher: nn.Module | None,
    student: nn.Module,
    data: DatasetSplits,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    loss_config: LossConfig,
    train_config: TrainConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> DistillResult:
    """Train ``student`` against ``teacher`` on ``data.train``; keep the best validation epoch.

    With ``teacher=None`` (only for ``method="ce"``) this is plain supervised training, used to
    build the demo's teacher and the CE-only benchmark baseline without a wasted forward pass.
    With ``checkpoint``, the full training state (weights, optimiser, schedule, generators,
    history) is written atomically after every epoch; ``resume=True`` continues from it, and the
    result is the same as an uninterrupted run with the same seed on CPU.
    """
    if teacher is None and loss_config.method != "ce":
        raise ValueError("a teacher is required unless loss_config.method == 'ce'")
    cfg = train_config
    device = resolve_device(cfg.device)
    started = time.perf_counter()
    classes = len(data.class_names)
    if teacher is not None:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    student = student.to(device)
    if device.type == "cuda":
        student = student.to(memory_format=torch.channels_last)
    dinfo = distributed.info()
    train_model: nn.Module = student
    if dinfo.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(student, device_ids=ids)
    per_rank_batch = max(1, cfg.batch_size // dinfo.world_size)
    train: Split = data.train
    train_images = train.images.to(device, non_blocking=True)
    train_labels = train.labels.to(device, non_blocking=True)
    stats = _teacher_statistics(teacher, data, mean, std, device)
    teacher_cache = None
    if teacher is not None and not cfg.augment and cfg.cache_teacher:
        # Un-augmented inputs give the same teacher logits every epoch: compute them once.
        teacher_cache = predict_logits(teacher, train.images, mean, std, device).to(device)

    loss_fn = DistillationLoss(loss_config, cfg.epochs)
    optimizer = torch.optim.SGD(
        student.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.momentum > 0,
        fused=device.type == "cuda" or None,
    )
    shard_size = len(train) // dinfo.world_size
    total_steps = cfg.epochs * math.ceil(shard_size / per_rank_batch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    shuffle = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1 + dinfo.rank)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    best_state = copy.deepcopy(student.state_dict())
    best_val, best_epoch, first_epoch = -1.0, -1, 0
    history: list[dict[str, Any]] = []
    if resume and checkpoint is not None and checkpoint.exists():
        state = _load_state(checkpoint)
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        shuffle.set_state(state["shuffle_rng"])
        aug_gen.set_state(state["augment_rng"].to(aug_gen.get_state().device))
        best_state, best_val, best_epoch = (
            state["best_state"],
            state["best_val"],
            state["best_epoch"],
        )
        history, first_epoch = state["history"], state["epoch"]
    for epoch in range(first_epoch, cfg.epochs):
        epoch_start = time.perf_counter()
        student.train()
        sums: dict[str, torch.Tensor] = {}
        wrong_per_class = torch.zeros(classes, device=device)
        seen_per_class = torch.zeros(classes, device=device)
        correct = torch.zeros((), device=device)
        order = distributed.shard(
            torch.randperm(len(train), generator=shuffle), dinfo.rank, dinfo.world_size
        )
        for start in range(0, len(order), per_rank_batch):
            idx = order[start : start + per_rank_batch].to(device, non_blocking=True)
            batch = train_images[idx]
            x = normalize(augment(batch, aug_gen, cfg.hflip) if cfg.augment else batch, mean, std)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = train_labels[idx]
            with autocast:
                s_logits = train_model(x)
                if teacher is None:
                    t_logits = s_logits.detach()
                elif teacher_cache is not None:
                    t_logits = teacher_cache[idx]
                else:
                    with torch.no_grad():
                        t_logits = teacher(x)
                terms = loss_fn(s_logits.float(), t_logits.float(), y, epoch)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            scheduler.step()
            # Accumulate on the device: no host synchronisation inside the epoch.
            for key, value in terms.items():
                if key not in ("n_wrong", "b", "warmup"):
                    sums[key] = sums.get(key, 0.0) + value.detach().float() * y.shape[0]
            wrong = (t_logits.argmax(1) != y).float() if teacher is not None else y.float() * 0
            wrong_per_class.index_add_(0, y, wrong)
            seen_per_class.index_add_(0, y, torch.ones_like(wrong))
            correct += (s_logits.argmax(1) == y).sum()
        for value in (*sums.values(), wrong_per_class, seen_per_class, correct):
            distributed.all_reduce_sum(value)  # metrics over all ranks (no-op on one process)
        if not torch.isfinite(sums["loss"]):
            where = (
                f"; the last good state (epoch {epoch}) is kept in {checkpoint}"
                if checkpoint
                else ""
            )
            raise CompressorError(
                f"training diverged: the loss became NaN or infinite in epoch {epoch + 1}{where}; "
                "lower --lr or check the data"
            )
        val_top1 = top1(
            predict_logits(student, data.val.images, mean, std, device), data.val.labels
        )
        seen = float(seen_per_class.sum())
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update({k: float(v) / seen for k, v in sums.items()})
        distilling = loss_config.method != "ce" and teacher is not None
        row.update(
            {
                "b": bias_weight(epoch, cfg.epochs, loss_config.schedule)
                if distilling and loss_config.bias_aware
                else None,
                "lr": optimizer.param_groups[0]["lr"],
                "train_top1": float(correct) / seen,
                "samples": int(seen),
                "val_top1": val_top1,
                "teacher_wrong_fraction": float(wrong_per_class.sum()) / seen,
                "n_rectified": int(wrong_per_class.sum())
                if distilling and loss_config.bias_aware and loss_config.rectification != "drop"
                else 0,
                "seconds": time.perf_counter() - epoch_start,
                "teacher_wrong_per_class": (wrong_per_class / seen_per_class.clamp_min(1)).tolist(),
            }
        )
        history.append(row)
        if val_top1 > best_val:
            best_val, best_epoch = val_top1, epoch + 1
            best_state = copy.deepcopy(student.state_dict())
        if checkpoint is not None and dinfo.is_main:
            _save_state(
                checkpoint,
                {
                    "epoch": epoch + 1,
                    "student": student.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "shuffle_rng": shuffle.get_state(),
                    "augment_rng": aug_gen.get_state().cpu(),
                    "best_state": best_state,
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "history": history,
                },
            )
        if on_epoch:
            on_epoch(row)
    student.load_state_dict(best_state)
    student.eval()
    return DistillResult(
        student=student.cpu(),
        device=str(device),
        best_epoch=best_epoch,
        best_val_top1=best_val,
        history=history,
        seconds=time.perf_counter() - started,
        resumed_from_epoch=first_epoch or None,
        world_size=dinfo.world_size,
        **stats,
    )
