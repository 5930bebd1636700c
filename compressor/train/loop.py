"""The distillation loop: devices, optimiser, schedule, validation-based model selection.

The loop never names a loss method: it calls a :class:`~compressor.losses.total.DistillationLoss`
and logs the per-sample terms it returns (:mod:`compressor.train.step`). The best epoch is
chosen on the validation split carved from the training data, never on the test split the
report quotes; of tied epochs the later one is kept. Around it:
:mod:`compressor.compute.inference` (predictions on a device),
:mod:`compressor.train.teacher_pass` (the teacher's one pass) and :mod:`compressor.train.state`
(the checkpoint a resumed run starts from).
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.compute import distributed
from compressor.compute.inference import (
    DeviceImages,
    accuracy,
    inference_batch_size,
    predict_sharded,
)
from compressor.compute.speed import compile_errors, device_settings, grad_scaler
from compressor.config.loss import LossConfig
from compressor.config.train import TrainConfig
from compressor.data.splits import DatasetSplits
from compressor.errors import CompressorError
from compressor.losses.total import DistillationLoss
from compressor.train.setup import (
    BatchPlan,
    Placement,
    RunModels,
    batchnorm_recalibration,
    build_optimiser,
    place_models,
    step_settings,
)
from compressor.train.state import TrainState
from compressor.train.step import TrainStep, augment_seed, train_epoch
from compressor.train.teacher_pass import Predict, run_teacher_pass


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
    # per validation image, right at the best epoch (bool tensor): recipes.py's paired test
    best_val_correct: torch.Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("student")
        out.pop("best_val_correct")
        return out


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
    without a wasted forward pass. With ``checkpoint``, the full training state (weights,
    optimiser, schedule, generators, history) is written atomically after every epoch;
    ``resume=True`` continues from it, and the result is the same as an uninterrupted run with
    the same seed on CPU.
    """
    loss_fn = DistillationLoss(loss_config, train_config.epochs)
    if teacher is None and loss_fn.distills:
        raise ValueError(f"method {loss_config.method!r} distils from a teacher: pass one")
    place = Placement.resolve(student, train_config, len(data.train))
    started = time.perf_counter()
    with device_settings(place.device, train_config.deterministic):
        models = place_models(teacher, student, data, mean, std, train_config, place)
        run, teacher_statistics = _build_run(models, data, mean, std, loss_fn, train_config, place)
        run.checkpoint = checkpoint  # named in the message of a diverged run
        progress = _train(run, train_config, checkpoint, resume, on_epoch)
    return DistillResult(
        student=run.student.cpu(),
        device=str(place.device),
        best_epoch=progress.best_epoch,
        best_val_top1=progress.best_val,
        history=progress.history,
        seconds=time.perf_counter() - started,
        resumed_from_epoch=progress.first_epoch or None,
        world_size=place.world.world_size,
        step=step_settings(models, train_config, place).to_dict(),
        best_val_correct=progress.best_correct,
        **teacher_statistics,
    )


def _train(
    run: _Run,
    train_config: TrainConfig,
    checkpoint: Path | None,
    resume: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> _Progress:
    """The epoch loop (from the checkpoint when resuming); leaves the best epoch's weights."""
    place = run.place
    if resume and checkpoint is not None and checkpoint.exists():
        progress = _resume(run, checkpoint)
    else:
        progress = _Progress(best_state=copy.deepcopy(run.student.state_dict()))
    with compile_errors(place.compile.mode is not None):  # a compiler failure is one clear line
        for epoch in range(progress.first_epoch, train_config.stop_after or train_config.epochs):
            row, val_correct = _run_epoch(run, epoch)
            progress.record(row, epoch, val_correct, run.student)
            if checkpoint is not None and place.world.is_main:
                _train_state(run, progress, epoch).save(checkpoint)
            if on_epoch:
                on_epoch(row)
    run.student.load_state_dict(progress.best_state)
    run.student.eval()
    return progress


@dataclass
class _Run:
    """Everything the epoch loop needs beyond the step itself."""

    step: TrainStep
    student: nn.Module
    place: Placement
    batches: BatchPlan
    shuffle: torch.Generator  # the epochs' order; its state is checkpointed
    val: DeviceImages
    val_labels: torch.Tensor
    predict: Predict
    recalibrate_student: Callable[[], int]
    classes: int
    checkpoint: Path | None = None


def _build_run(
    models: RunModels,
    data: DatasetSplits,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    loss_fn: DistillationLoss,
    cfg: TrainConfig,
    place: Placement,
) -> tuple[_Run, dict[str, Any]]:
    """The images on the device, the teacher pass, the optimiser and its schedule, the step.

    Returns the run and the teacher's statistics (``DistillResult``'s teacher fields).
    """
    device, classes = place.device, len(data.class_names)
    train, val = DeviceImages(data.train, device), DeviceImages(data.val, device)
    train_labels = data.train.labels.to(device, non_blocking=True)
    predict = functools.partial(
        predict_sharded, mean=mean, std=std, classes=classes,
        batch_size=cfg.eval_batch_size or inference_batch_size(device),
        channels_last=place.channels_last, precision=place.precision,
    )  # fmt: skip
    # One teacher pass over the un-augmented training images serves the bias statistics and,
    # without augmentation, the logit cache (the teacher's output is then the same every epoch).
    cache_logits = models.teacher is not None and not cfg.augment and cfg.cache_teacher
    teacher = run_teacher_pass(models.teacher, train, val, data, predict, cache_logits)
    recalibrate = batchnorm_recalibration(models.student, train, mean, std, cfg, place)
    batches = BatchPlan.plan(
        cfg, len(train), place.world.world_size, compiled=place.compile.mode is not None
    )
    optimizer, scheduler = build_optimiser(models.student, cfg, place, batches)
    step = TrainStep(
        model=models.trained, teacher=models.teacher_step, teacher_cache=teacher.logit_cache,
        loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler,
        scaler=grad_scaler(device, place.precision), images=train, labels=train_labels,
        augment_gen=torch.Generator(device=device),  # seeded per epoch: augment_seed
        cfg=cfg, mean=mean, std=std, device=device, precision=place.precision,
        channels_last=place.channels_last, compile_mode=place.compile.mode,
    )  # fmt: skip
    shuffle = torch.Generator().manual_seed(cfg.seed)
    run = _Run(step, models.student, place, batches, shuffle, val, data.val.labels, predict,
               recalibrate, classes)  # fmt: skip
    return run, teacher.statistics


@dataclass
class _Progress:
    """The run so far: the epoch it started from, its history and its best validation epoch."""

    best_state: dict[str, Any]
    best_val: float = -1.0
    best_epoch: int = -1
    first_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_correct: torch.Tensor | None = None  # per validation image (not kept in checkpoints)

    def record(
        self, row: dict[str, Any], epoch: int, val_correct: torch.Tensor, student: nn.Module
    ) -> None:
        self.history.append(row)
        val_top1 = row["val_top1"]
        # A tie goes to the later epoch: it trained longer, at the schedule's lower learning
        # rate, and on a small validation split ties are common (150 images: steps of 0.67
        # points). Seen in docs/pruning.md: epochs 1, 4 and 6 of 8 tied and epoch 1 shipped,
        # in the one run of four that ended outside the accuracy gate.
        if val_top1 >= self.best_val:
            self.best_val, self.best_epoch = val_top1, epoch + 1
            self.best_state = copy.deepcopy(student.state_dict())
            self.best_correct = val_correct


def _run_epoch(run: _Run, epoch: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Train one epoch, recalibrate BatchNorm, validate: (history row, per validation image
    whether the student got it right)."""
    epoch_start = time.perf_counter()
    step, world, batches = run.step, run.place.world, run.batches
    run.student.train()
    order = distributed.shard(
        torch.randperm(len(step.images), generator=run.shuffle), world.rank, world.world_size
    )
    if batches.drop_last:
        order = order[: batches.steps_per_epoch * batches.per_rank]
    step.augment_gen.manual_seed(augment_seed(step.cfg.seed, world.rank, epoch))
    sums = train_epoch(step, order, batches.per_rank, epoch, run.classes)
    if not torch.isfinite(sums.terms["loss"]):
        kept = f"; the last good state (epoch {epoch}) is kept in {run.checkpoint}"
        raise CompressorError(
            "training diverged: the loss became NaN or infinite in epoch "
            f"{epoch + 1}{kept if run.checkpoint else ''}; lower --lr or check the data"
        )
    run.recalibrate_student()
    predicted = run.predict(run.student, run.val, logits=False)
    val_top1 = accuracy(predicted, run.val_labels)
    row = sums.history_row(epoch, step.loss_fn)
    row.update(
        lr=step.optimizer.param_groups[0]["lr"],
        val_top1=val_top1,
        seconds=time.perf_counter() - epoch_start,
    )
    return row, predicted == run.val_labels


def _train_state(run: _Run, progress: _Progress, epoch: int) -> TrainState:
    """The checkpoint after the 0-based ``epoch``."""
    step = run.step
    return TrainState(
        epoch=epoch + 1,
        student=run.student.state_dict(),
        optimizer=step.optimizer.state_dict(),
        scheduler=step.scheduler.state_dict(),
        scaler=step.scaler.state_dict(),
        shuffle_rng=run.shuffle.get_state(),
        world_size=run.place.world.world_size,
        best_state=progress.best_state,
        best_val=progress.best_val,
        best_epoch=progress.best_epoch,
        history=progress.history,
    )


def _resume(run: _Run, checkpoint: Path) -> _Progress:
    """Load ``checkpoint`` into the run's objects; the progress it records."""
    state = TrainState.load(checkpoint)
    world_size = run.place.world.world_size
    if state.world_size != world_size:
        raise CompressorError(
            f"cannot resume from {checkpoint}: it was trained by {state.world_size} process(es) "
            f"and this run has {world_size}; the batch per step and the learning-rate "
            "schedule depend on it. Resume with the same torchrun --nproc_per_node, or start "
            "again with --overwrite"
        )
    run.student.load_state_dict(state.student)
    run.step.optimizer.load_state_dict(state.optimizer)
    run.step.scheduler.load_state_dict(state.scheduler)
    run.shuffle.set_state(state.shuffle_rng)
    if state.scaler:
        run.step.scaler.load_state_dict(state.scaler)
    return _Progress(state.best_state, state.best_val, state.best_epoch, state.epoch,
                     state.history)  # fmt: skip
