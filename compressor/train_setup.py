"""Where and how a training run computes, set up once before its first epoch.

The device, precision and memory format (:class:`Placement`); the models as the run uses them,
teacher folded and cast, student maybe DDP-wrapped and compiled (:func:`place_models`); how an
epoch is cut into steps (:class:`BatchPlan`); the optimiser and its learning-rate schedule
(:func:`build_optimiser`); the BatchNorm recalibration run before every validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from compressor import distributed
from compressor.accel import (
    StepSettings,
    configure_device,
    maybe_compile,
    nhwc_unsafe_layer,
    prepare_teacher,
    resolve_channels_last,
    resolve_precision,
    to_memory_format,
)
from compressor.batchnorm import recalibrate_batchnorm
from compressor.data import DatasetSplits, normalize
from compressor.inference import DeviceImages, inference_batch_size, resolve_device
from compressor.train_step import lr_factor

if TYPE_CHECKING:
    from compressor.distill import TrainConfig


@dataclass
class Placement:
    """Where and how this run computes, resolved once from the settings and the student."""

    device: torch.device
    precision: str
    channels_last: bool
    nhwc_unsafe_layer: str | None  # a layer that rules channels-last out on CPU
    world: distributed.DistInfo

    @classmethod
    def resolve(cls, student: nn.Module, cfg: TrainConfig) -> Placement:
        device = resolve_device(cfg.device)
        precision = resolve_precision(cfg.precision, device)
        channels_last = resolve_channels_last(cfg.channels_last, device)
        unsafe_layer = nhwc_unsafe_layer(student) if device.type == "cpu" else None
        channels_last = channels_last and unsafe_layer is None  # oneDNN bug: nhwc_unsafe_layer
        configure_device(device)
        return cls(device, precision, channels_last, unsafe_layer, distributed.info())


@dataclass
class RunModels:
    """The models as this run uses them."""

    student: nn.Module  # on the device, in its memory format
    trained: nn.Module  # the student as trained: maybe DDP-wrapped, maybe compiled
    teacher: nn.Module | None  # prepared (batch norms folded, cast) for the teacher pass
    teacher_step: nn.Module | None  # the teacher as the step runs it (maybe compiled)
    teacher_folded: bool


def place_models(
    teacher: nn.Module | None,
    student: nn.Module,
    data: DatasetSplits,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    cfg: TrainConfig,
    place: Placement,
) -> RunModels:
    """Move, fold, wrap and compile the models for ``place``."""
    device, folded = place.device, False
    if teacher is not None:
        first = torch.arange(min(64, len(data.train)))
        example = normalize(data.train.read(first).to(device), mean, std)
        teacher, folded = prepare_teacher(
            teacher, device, place.channels_last, example, place.precision
        )
    student = student.to(device)
    if place.channels_last:
        student = student.to(memory_format=torch.channels_last)
    trained: nn.Module = student
    if place.world.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(student, device_ids=ids)
    trained = maybe_compile(trained, cfg.compile)
    teacher_step = maybe_compile(teacher, cfg.compile) if teacher is not None else None
    return RunModels(student, trained, teacher, teacher_step, folded)


@dataclass
class BatchPlan:
    """How an epoch is cut into steps."""

    per_rank: int  # --batch-size is per process
    drop_last: bool  # compiled: the short last batch is dropped (no second shape to compile)
    steps_per_epoch: int

    @classmethod
    def plan(cls, cfg: TrainConfig, train_images: int, world_size: int) -> BatchPlan:
        shard_size = train_images // world_size
        # Compiled, an epoch's short last batch is dropped (its images come up in later
        # epochs): a second shape would make dynamo compile the whole step again.
        drop_last = cfg.compile and shard_size >= cfg.batch_size
        steps = (shard_size // cfg.batch_size if drop_last
                 else math.ceil(shard_size / cfg.batch_size))  # fmt: skip
        return cls(cfg.batch_size, drop_last, steps)


def build_optimiser(
    student: nn.Module, cfg: TrainConfig, place: Placement, batches: BatchPlan
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD (Nesterov) with a per-step cosine schedule and, on several processes, a warm-up.

    The peak learning rate scales with the number of processes (docs/throughput.md, "Several
    GPUs"): global batch and lr grow with the world size, each GPU keeps a batch large enough
    to be efficient and its BatchNorm a batch large enough for good statistics, so no
    SyncBatchNorm is needed.
    """
    world_size = place.world.world_size
    optimizer = torch.optim.SGD(
        student.parameters(),
        lr=cfg.lr * world_size,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.momentum > 0,
        fused=place.device.type == "cuda" or None,
    )
    total_steps = max(1, cfg.epochs * batches.steps_per_epoch)
    warmup_steps = math.ceil(0.05 * total_steps) if world_size > 1 else 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, world_size)
    )
    return optimizer, scheduler


def step_settings(models: RunModels, cfg: TrainConfig, place: Placement) -> StepSettings:
    """How the step ran (precision, memory format, folding, compile...), for the report."""
    return StepSettings(
        str(place.device), place.precision, place.channels_last, cfg.compile,
        models.teacher_folded, teacher_dtype=_dtype_name(models.teacher),
        batch_per_rank=cfg.batch_size, world_size=place.world.world_size,
        lr=cfg.lr * place.world.world_size, nhwc_unsafe_layer=place.nhwc_unsafe_layer,
    )  # fmt: skip


def batchnorm_recalibration(
    student: nn.Module,
    train: DeviceImages,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    cfg: TrainConfig,
    channels_last: bool,
) -> Callable[[], int]:
    """A function that recomputes the student's BatchNorm statistics on a fixed, seeded set of
    un-augmented training images (the same on every rank), see :mod:`compressor.batchnorm`.
    ``channels_last`` is the run's memory-format decision (:class:`Placement`)."""
    count = min(cfg.bn_recalibration_images, len(train))
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:count]
    pick = pick.sort().values
    size = cfg.eval_batch_size or inference_batch_size(train.device)

    def inputs() -> Iterator[torch.Tensor]:
        for _idx, batch in train.batches(pick, size):
            yield to_memory_format(normalize(batch, mean, std), channels_last)

    return lambda: recalibrate_batchnorm(student, inputs()) if count else 0


def _dtype_name(model: nn.Module | None) -> str:
    param = next(iter(model.parameters()), None) if model is not None else None
    return str(param.dtype).removeprefix("torch.") if param is not None else "float32"
