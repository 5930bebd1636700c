"""Where and how a training run computes, set up once before its first epoch.

The device, precision and memory format (:class:`Placement`); the models as the run uses them,
teacher folded and cast, student maybe DDP-wrapped and compiled (:func:`place_models`); how an
epoch is cut into steps (:class:`BatchPlan`); the optimiser and its learning-rate schedule
(:func:`build_optimiser`); the BatchNorm recalibration run before every validation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from compressor.compute import distributed
from compressor.compute.batchnorm import recalibrate_batchnorm
from compressor.compute.inference import DeviceImages, inference_batch_size, resolve_device
from compressor.compute.speed import (
    CompilePlan,
    StepSettings,
    autocast,
    maybe_compile,
    nhwc_unsafe_layer,
    prepare_teacher,
    resolve_channels_last,
    resolve_compile,
    resolve_precision,
    to_memory_format,
)
from compressor.data.splits import DatasetSplits, normalize
from compressor.train.step import lr_factor

if TYPE_CHECKING:
    from compressor.config.train import TrainConfig

_log = logging.getLogger(__name__)


@dataclass
class Placement:
    """Where and how this run computes, resolved once from the settings and the student."""

    device: torch.device
    precision: str
    channels_last: bool
    nhwc_unsafe_layer: str | None  # a layer that rules channels-last out on CPU
    world: distributed.DistInfo
    compile: CompilePlan = field(default_factory=lambda: CompilePlan(None))

    @classmethod
    def resolve(cls, student: nn.Module, cfg: TrainConfig, train_images: int) -> Placement:
        """Resolve ``cfg``'s "auto" settings for this device, student and training split."""
        device = resolve_device(cfg.device)
        precision = resolve_precision(cfg.precision, device)
        channels_last = resolve_channels_last(cfg.channels_last, device)
        unsafe_layer = nhwc_unsafe_layer(student) if device.type == "cpu" else None
        channels_last = channels_last and unsafe_layer is None  # oneDNN bug: nhwc_unsafe_layer
        world = distributed.info()
        static = train_images // world.world_size >= cfg.batch_size  # every batch can be full
        plan = resolve_compile(cfg.compile, device, static, world.world_size)
        if plan.mode is None and device.type == "cuda" and cfg.compile is not False:
            _log.warning("training step runs eagerly on %s: %s", device, plan.reason)
        return cls(device, precision, channels_last, unsafe_layer, world, plan)


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
        # No per-step buffer broadcast: BatchNorm statistics are recomputed (identically on
        # every rank) before each validation, so rank 0's running averages are never needed.
        trained = nn.parallel.DistributedDataParallel(
            student, device_ids=ids, broadcast_buffers=False
        )
    trained = maybe_compile(trained, place.compile.mode)
    teacher_step = maybe_compile(teacher, place.compile.mode) if teacher is not None else None
    return RunModels(student, trained, teacher, teacher_step, folded)


@dataclass
class BatchPlan:
    """How an epoch is cut into steps."""

    per_rank: int  # --batch-size is per process
    drop_last: bool  # compiled: the short last batch is dropped (no second shape to compile)
    steps_per_epoch: int

    @classmethod
    def plan(
        cls, cfg: TrainConfig, train_images: int, world_size: int, compiled: bool
    ) -> BatchPlan:
        shard_size = train_images // world_size
        # Compiled, an epoch's short last batch is dropped (its images come up in later
        # epochs): a second shape would make dynamo compile the whole step again.
        drop_last = compiled and shard_size >= cfg.batch_size
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
        str(place.device), place.precision, place.channels_last, place.compile.mode is not None,
        models.teacher_folded, compile_mode=place.compile.mode,
        eager_reason=place.compile.reason, deterministic=cfg.deterministic,
        teacher_dtype=_dtype_name(models.teacher),
        batch_per_rank=cfg.batch_size, world_size=place.world.world_size,
        lr=cfg.lr * place.world.world_size, nhwc_unsafe_layer=place.nhwc_unsafe_layer,
    )  # fmt: skip


def batchnorm_recalibration(
    student: nn.Module,
    train: DeviceImages,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    cfg: TrainConfig,
    place: Placement,
) -> Callable[[], int]:
    """A function that recomputes the student's BatchNorm statistics on a fixed, seeded set of
    un-augmented training images, see :mod:`compressor.compute.batchnorm`.

    The set is the same for every world size; each rank runs its block of its batches and the
    statistics are averaged over ranks
    (:func:`~compressor.compute.batchnorm.recalibrate_batchnorm`),
    so every rank ends with the same statistics at 1/world_size of the work. The forward runs
    under the run's precision (autocast: BatchNorm itself stays fp32), in its memory format.
    """
    count = min(cfg.bn_recalibration_images, len(train))
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:count]
    pick = pick.sort().values
    size = cfg.eval_batch_size or inference_batch_size(train.device)
    world = place.world
    batches = distributed.span(math.ceil(count / size), world.rank, world.world_size)
    mine = pick[batches.start * size : batches.stop * size]

    def inputs() -> Iterator[torch.Tensor]:
        for _idx, batch in train.batches(mine, size):
            yield to_memory_format(normalize(batch, mean, std), place.channels_last)

    combine = distributed.all_reduce_sum if world.world_size > 1 else None

    def recalibrate() -> int:
        with autocast(place.device, place.precision):
            return recalibrate_batchnorm(student, inputs(), combine)

    return recalibrate if count else lambda: 0


def _dtype_name(model: nn.Module | None) -> str:
    param = next(iter(model.parameters()), None) if model is not None else None
    return str(param.dtype).removeprefix("torch.") if param is not None else "float32"
