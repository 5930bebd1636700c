"""The distillation loop: devices, optimiser, schedule, validation-based model selection.

The loop never names a loss method: it calls a :class:`~compressor.losses.DistillationLoss`
and logs the per-sample terms it returns (not its counters). The best epoch is chosen on the
validation split carved from the training data, never on the test split the report quotes.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor import distributed
from compressor.accel import (
    StepSettings,
    autocast,
    check_precision,
    compile_errors,
    configure_device,
    grad_scaler,
    maybe_compile,
    nhwc_unsafe_layer,
    prepare_teacher,
    resolve_channels_last,
    resolve_precision,
    to_memory_format,
)
from compressor.batchnorm import recalibrate_batchnorm
from compressor.data import DatasetSplits, normalize, train_augment
from compressor.errors import CompressorError
from compressor.inference import (
    DeviceImages,
    accuracy,
    inference_batch_size,
    predict_sharded,
    resolve_device,
)
from compressor.io import atomic_write
from compressor.losses import DistillationLoss, LossConfig


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
    eval_batch_size: int | None = None  # None: 128 on CPU, 512 on CUDA (inference_batch_size)
    precision: str = "auto"  # auto: bf16 on CUDA (fp16 + grad scaler without bf16), fp32 on CPU
    compile: bool = False  # torch.compile the student's training step and the teacher
    channels_last: bool | None = None  # None: the device's default (NHWC on CUDA and CPU)
    crop_scale: tuple[float, float] = (0.25, 1.0)  # RandomResizedCrop area range (>= 64 px)
    bn_recalibration_images: int = 1024  # precise BN before each validation; 0 turns it off
    stop_after: int | None = None  # end after this many epochs of the `epochs` schedule (a pilot)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "eval_batch_size": self.eval_batch_size is None or self.eval_batch_size >= 1,
            "crop_scale": len(self.crop_scale) == 2
            and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
            "bn_recalibration_images": self.bn_recalibration_images >= 0,
            "stop_after": self.stop_after is None or 1 <= self.stop_after <= self.epochs,
        }
        for name, ok in checks.items():
            if not ok:
                raise CompressorError(f"invalid training setting {name}={getattr(self, name)!r}")
        check_precision(self.precision)
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))


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
    step: dict[str, Any] = field(default_factory=dict)  # precision, memory format, compile
    student_init: dict[str, Any] | None = None  # pretrained weights loaded (student_init.py)
    recipe_choice: dict[str, Any] | None = None  # --method auto: pilots and winner (recipes.py)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("student")
        return out


def augment_seed(seed: int, rank: int, epoch: int) -> int:
    """The augmentation generator's seed for one rank's epoch.

    Derived from (seed, rank, epoch) alone, so a resumed run, on any rank, draws the same crops
    as an uninterrupted one without saving generator states, and ranks never share a stream.
    """
    digest = hashlib.blake2b(f"{seed}/{rank}/{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # below 2**63: valid for every generator


def _lr_factor(step: int, total_steps: int, warmup_steps: int, world_size: int) -> float:
    """Per-step multiplier of the peak learning rate: cosine decay to 0 over ``total_steps``.

    With several processes the peak is ``lr * world_size`` (linear scaling) and the first
    ``warmup_steps`` ramp linearly from ``lr`` up to it (Goyal et al. 2017).
    """
    cosine = 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if step >= warmup_steps:
        return cosine
    return cosine * (1 + (world_size - 1) * step / warmup_steps) / world_size


def per_class_error(predictions: torch.Tensor, labels: torch.Tensor, classes: int) -> list[float]:
    """Error rate of each class (0 for classes absent from ``labels``)."""
    wrong = torch.zeros(classes).index_add_(0, labels, (predictions != labels).float())
    count = torch.bincount(labels, minlength=classes).clamp_min(1).float()
    return (wrong / count).tolist()


def _teacher_statistics(
    data: DatasetSplits, train_pred: torch.Tensor | None, val_pred: torch.Tensor | None
) -> dict[str, Any]:
    """How wrong the teacher is on the (un-augmented) training split: the bias to remove.

    The predictions are the teacher's classes on the training and validation splits; ``None``
    for supervised training, which has no teacher and so no bias to measure.
    """
    classes = len(data.class_names)
    labels = data.train.labels
    if train_pred is None or val_pred is None:
        pred = labels.clone()
        val_top1 = 1.0
    else:
        pred = train_pred
        val_top1 = accuracy(val_pred, data.val.labels)
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    return {
        "teacher_val_top1": val_top1,
        "teacher_train_error": 1.0 - float((pred == labels).float().mean()) if len(labels) else 0.0,
        "teacher_train_error_per_class": per_class_error(pred, labels, classes),
        "teacher_train_confusion": confusion.tolist(),
    }


def _dtype_name(model: nn.Module | None) -> str:
    param = next(iter(model.parameters()), None) if model is not None else None
    return str(param.dtype).removeprefix("torch.") if param is not None else "float32"


def _save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: say so instead of a traceback
        raise CompressorError(f"cannot resume from {path}: {exc}") from exc


def _batchnorm_recalibration(
    student: nn.Module,
    train: DeviceImages,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    cfg: TrainConfig,
) -> Callable[[], int]:
    """A function that recomputes the student's BatchNorm statistics on a fixed, seeded set of
    un-augmented training images (the same on every rank), see :mod:`compressor.batchnorm`."""
    count = min(cfg.bn_recalibration_images, len(train))
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:count]
    pick = pick.sort().values
    channels_last = resolve_channels_last(cfg.channels_last, train.device)
    size = cfg.eval_batch_size or inference_batch_size(train.device)

    def inputs() -> Iterator[torch.Tensor]:
        for _idx, batch in train.batches(pick, size):
            yield to_memory_format(normalize(batch, mean, std), channels_last)

    return lambda: recalibrate_batchnorm(student, inputs()) if count else 0


@dataclass
class _Step:
    """Everything one optimisation step touches, so the epoch loop reads as a recipe."""

    model: nn.Module  # the student as trained: maybe DDP-wrapped, maybe compiled
    teacher: nn.Module | None
    teacher_cache: torch.Tensor | None
    loss_fn: DistillationLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    images: DeviceImages  # the training split as the device sees it
    labels: torch.Tensor  # on the training device
    augment_gen: torch.Generator
    cfg: TrainConfig
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    precision: str
    channels_last: bool


@dataclass
class _EpochSums:
    """Metrics of one epoch, summed over samples on the device and then over ranks."""

    terms: dict[str, torch.Tensor]
    wrong_per_class: torch.Tensor
    seen_per_class: torch.Tensor
    correct: torch.Tensor


def _train_epoch(
    step: _Step, order: torch.Tensor, batch_size: int, epoch: int, classes: int
) -> _EpochSums:
    """One pass over ``order``; metrics stay on the device (no host synchronisation)."""
    cfg, device = step.cfg, step.device
    sums = _EpochSums(
        {}, torch.zeros(classes, device=device), torch.zeros(classes, device=device),
        torch.zeros((), device=device),
    )  # fmt: skip
    for idx, batch in step.images.batches(order, batch_size):
        if cfg.augment:
            batch = train_augment(batch, step.augment_gen, cfg.hflip, cfg.crop_scale)
        x = to_memory_format(normalize(batch, step.mean, step.std), step.channels_last)
        y = step.labels[idx]
        with autocast(device, step.precision):
            s_logits = step.model(x)
            if step.teacher is None:
                t_logits = s_logits.detach()
            elif step.teacher_cache is not None:
                t_logits = _cached_logits(step.teacher_cache, idx)
            else:
                with torch.inference_mode():
                    t_logits = step.teacher(x)
                t_logits = t_logits.clone()  # a normal tensor again, usable by autograd
            out = step.loss_fn(s_logits.float(), t_logits.float(), y, epoch)
        step.optimizer.zero_grad(set_to_none=True)
        step.scaler.scale(out.loss).backward()  # scaling is a no-op unless fp16
        step.scaler.step(step.optimizer)
        step.scaler.update()
        step.scheduler.step()
        for key, value in {"loss": out.loss, **out.terms}.items():
            weighted = value.detach().float() * y.shape[0]
            sums.terms[key] = sums.terms[key] + weighted if key in sums.terms else weighted
        if step.teacher is not None:
            sums.wrong_per_class.index_add_(0, y, (t_logits.argmax(1) != y).float())
        sums.seen_per_class.index_add_(0, y, torch.ones_like(y, dtype=torch.float))
        sums.correct += (s_logits.argmax(1) == y).sum()
    for value in (*sums.terms.values(), sums.wrong_per_class, sums.seen_per_class, sums.correct):
        distributed.all_reduce_sum(value)  # metrics over all ranks (no-op on one process)
    return sums


def _cached_logits(cache: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of the teacher-logit cache, which lives beside the images (device or host)."""
    if cache.device == idx.device:
        return cache[idx]
    return cache[idx.cpu()].to(idx.device, non_blocking=True)


def _epoch_row(sums: _EpochSums, epoch: int, loss_fn: DistillationLoss) -> dict[str, Any]:
    """The history row of one epoch (per-sample means of the loss terms, bias counts)."""
    seen = float(sums.seen_per_class.sum())
    row: dict[str, Any] = {"epoch": epoch + 1}
    row.update({k: float(v) / seen for k, v in sums.terms.items()})
    n_wrong = int(sums.wrong_per_class.sum())
    row.update(
        {
            "b": loss_fn.bias_weight_at(epoch),
            "train_top1": float(sums.correct) / seen,
            "samples": int(seen),
            "teacher_wrong_fraction": n_wrong / seen,
            "n_rectified": n_wrong if loss_fn.rectifies else 0,
            "teacher_wrong_per_class": (
                sums.wrong_per_class / sums.seen_per_class.clamp_min(1)
            ).tolist(),
        }
    )
    return row


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

    With ``teacher=None`` (only for a method without a distillation term, ``ce``) this is plain
    supervised training, used to build the demo's teacher and the CE-only benchmark baseline
    without a wasted forward pass.
    With ``checkpoint``, the full training state (weights, optimiser, schedule, generators,
    history) is written atomically after every epoch; ``resume=True`` continues from it, and the
    result is the same as an uninterrupted run with the same seed on CPU.
    """
    loss_fn = DistillationLoss(loss_config, train_config.epochs)
    if teacher is None and loss_fn.distills:
        raise ValueError(f"method {loss_config.method!r} distils from a teacher: pass one")
    cfg = train_config
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    channels_last = resolve_channels_last(cfg.channels_last, device)
    unsafe_layer = nhwc_unsafe_layer(student) if device.type == "cpu" else None
    channels_last = channels_last and unsafe_layer is None  # oneDNN bug: see nhwc_unsafe_layer
    configure_device(device)
    started = time.perf_counter()
    classes = len(data.class_names)
    folded = False
    if teacher is not None:
        first = torch.arange(min(64, len(data.train)))
        example = normalize(data.train.read(first).to(device), mean, std)
        teacher, folded = prepare_teacher(teacher, device, channels_last, example, precision)
    student = student.to(device)
    if channels_last:
        student = student.to(memory_format=torch.channels_last)
    dinfo = distributed.info()
    train_model: nn.Module = student
    if dinfo.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(student, device_ids=ids)
    train_model = maybe_compile(train_model, cfg.compile)
    teacher_forward = maybe_compile(teacher, cfg.compile) if teacher is not None else None
    # --batch-size is per process (per GPU) and the peak learning rate scales with the number
    # of processes, after a warm-up (docs/throughput.md, "Several GPUs"): global batch and lr
    # grow with the world size, each GPU keeps a batch large enough to be efficient and its
    # BatchNorm a batch large enough for good statistics, so no SyncBatchNorm is needed.
    per_rank_batch = cfg.batch_size
    peak_lr = cfg.lr * dinfo.world_size
    train = DeviceImages(data.train, device)
    val = DeviceImages(data.val, device)
    train_labels = data.train.labels.to(device, non_blocking=True)
    predict = functools.partial(
        predict_sharded, mean=mean, std=std, classes=classes,
        batch_size=cfg.eval_batch_size or inference_batch_size(device),
        channels_last=channels_last, precision=precision,
    )  # fmt: skip
    # One teacher pass over the un-augmented training images serves the bias statistics and,
    # without augmentation, the logit cache (the teacher's output is then the same every epoch).
    cache_logits = teacher is not None and not cfg.augment and cfg.cache_teacher
    teacher_cache = train_pred = val_pred = None
    if teacher is not None:
        train_out = predict(teacher, train, logits=cache_logits)
        train_pred = train_out.argmax(1) if cache_logits else train_out
        val_pred = predict(teacher, val, logits=False)
        if cache_logits:  # beside the images: on the device only if they are resident there
            teacher_cache = train_out.to(device) if train.resident is not None else train_out
    stats = _teacher_statistics(data, train_pred, val_pred)
    recalibrate_student = _batchnorm_recalibration(student, train, mean, std, cfg)

    optimizer = torch.optim.SGD(
        student.parameters(),
        lr=peak_lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.momentum > 0,
        fused=device.type == "cuda" or None,
    )
    shard_size = len(train) // dinfo.world_size
    # Compiled, an epoch's short last batch is dropped (its images come up in later epochs):
    # a second shape would make dynamo compile the whole step again.
    drop_last = cfg.compile and shard_size >= per_rank_batch
    steps_per_epoch = (shard_size // per_rank_batch if drop_last
                       else math.ceil(shard_size / per_rank_batch))  # fmt: skip
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    warmup_steps = math.ceil(0.05 * total_steps) if dinfo.world_size > 1 else 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, total_steps, warmup_steps, dinfo.world_size)
    )
    settings = StepSettings(
        str(device), precision, channels_last, cfg.compile, folded,
        teacher_dtype=_dtype_name(teacher), batch_per_rank=per_rank_batch,
        world_size=dinfo.world_size, lr=peak_lr, nhwc_unsafe_layer=unsafe_layer,
    )  # fmt: skip
    shuffle = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator(device=device)  # seeded per epoch: augment_seed(seed, rank, epoch)
    scaler = grad_scaler(device, precision)

    best_state = copy.deepcopy(student.state_dict())
    best_val, best_epoch, first_epoch = -1.0, -1, 0
    history: list[dict[str, Any]] = []
    if resume and checkpoint is not None and checkpoint.exists():
        state = _load_state(checkpoint)
        saved_world = state.get("world_size", 1)
        if saved_world != dinfo.world_size:
            raise CompressorError(
                f"cannot resume from {checkpoint}: it was trained by {saved_world} process(es) "
                f"and this run has {dinfo.world_size}; the batch per step and the learning-rate "
                "schedule depend on it. Resume with the same torchrun --nproc_per_node, or start "
                "again with --overwrite"
            )
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        shuffle.set_state(state["shuffle_rng"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        best_state, best_val, best_epoch = (
            state["best_state"],
            state["best_val"],
            state["best_epoch"],
        )
        history, first_epoch = state["history"], state["epoch"]
    step = _Step(
        model=train_model, teacher=teacher_forward, teacher_cache=teacher_cache, loss_fn=loss_fn,
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, images=train,
        labels=train_labels, augment_gen=aug_gen, cfg=cfg, mean=mean, std=std, device=device,
        precision=precision, channels_last=channels_last,
    )  # fmt: skip
    with compile_errors(cfg.compile):  # a compiler failure is one clear line
        for epoch in range(first_epoch, cfg.stop_after or cfg.epochs):
            epoch_start = time.perf_counter()
            student.train()
            order = distributed.shard(
                torch.randperm(len(train), generator=shuffle), dinfo.rank, dinfo.world_size
            )
            if drop_last:
                order = order[: steps_per_epoch * per_rank_batch]
            aug_gen.manual_seed(augment_seed(cfg.seed, dinfo.rank, epoch))
            sums = _train_epoch(step, order, per_rank_batch, epoch, classes)
            if not torch.isfinite(sums.terms["loss"]):
                kept = f"; the last good state (epoch {epoch}) is kept in {checkpoint}"
                raise CompressorError(
                    "training diverged: the loss became NaN or infinite in epoch "
                    f"{epoch + 1}{kept if checkpoint else ''}; lower --lr or check the data"
                )
            recalibrate_student()
            val_top1 = accuracy(predict(student, val, logits=False), data.val.labels)
            row = _epoch_row(sums, epoch, loss_fn)
            row.update(
                lr=optimizer.param_groups[0]["lr"],
                val_top1=val_top1,
                seconds=time.perf_counter() - epoch_start,
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
                        "scaler": scaler.state_dict(),
                        "shuffle_rng": shuffle.get_state(),
                        "world_size": dinfo.world_size,
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
        step=settings.to_dict(),
        **stats,
    )
