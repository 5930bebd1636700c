"""The distillation stage: the student's initial weights, one training run or ``--method auto``'s
pilots, and the student bundle it leaves in the run folder.

Every torchrun rank trains its shard; rank 0 alone writes files.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from compressor.compute import distributed
from compressor.config.loss import LossConfig
from compressor.config.run import RunConfig
from compressor.errors import CompressorError
from compressor.files import read_json, write_json_atomic
from compressor.models.checkpoint import ModelBundle, load_bundle, save_bundle
from compressor.models.pretrained import load_student_init
from compressor.models.registry import build_model
from compressor.pipeline.context import Log, RunContext
from compressor.pipeline.results import required
from compressor.pipeline.stage import Stage
from compressor.progress import Progress
from compressor.report.formatting import recipe_decision
from compressor.run_folder import RunFolder
from compressor.selection.table import Selection
from compressor.train.loop import DistillResult, distill
from compressor.train.recipes import PilotRow, choose_and_train, pilot_epochs


class DistillStage(Stage):
    """Train the chosen student against the teacher (see :mod:`compressor.pipeline.stages`)."""

    name = "distill"
    every_rank = True
    resumable = True

    def artifacts(self, folder: RunFolder) -> list[Path]:
        scratch = [folder.train_state, folder.pilot_record, *folder.pilot_checkpoints()]
        return [*self.records(folder), *scratch]

    def records(self, folder: RunFolder) -> list[Path]:
        return [folder.student_bundle, folder.distill_record]

    def run(self, ctx: RunContext) -> DistillResult:
        cfg, folder, log = ctx.cfg, ctx.folder, ctx.log
        selection = required(ctx.results.select, "select")
        arch = selection.chosen
        _student, init = initial_student(cfg, selection, ctx.teacher, folder, log)  # checks, logs
        lr = cfg.pruned_lr if selection.student_source == "pruned" else cfg.train.lr
        log(f"distilling {arch} for {cfg.train.epochs} epochs (peak lr {lr:g})")
        train = _trainer(ctx, selection)
        if cfg.auto_recipes:
            result = _choose_recipe_and_train(ctx, train)
        else:
            result = train(cfg.loss, folder.train_state, None)
        if result.resumed_from_epoch:
            log(f"resumed training after epoch {result.resumed_from_epoch}")
        result.student_init = init
        if distributed.info().is_main:
            _save_student(ctx, selection, result)
        return result

    def load(self, ctx: RunContext) -> DistillResult:
        ctx.log("resume: distillation done before")
        saved = read_json(ctx.folder.distill_record)
        return DistillResult(student=load_bundle(ctx.folder.student_bundle).model, **saved)


def _trainer(ctx: RunContext, selection: Selection) -> Any:
    """``train(loss, checkpoint, stop_after)``: one training from the seeded (``--student-init``,
    or derived) weights, resumed from ``checkpoint`` when it exists; ``stop_after`` ends a pilot
    early. A derived student trains at ``--pruned-lr``: it starts close to the teacher."""
    cfg, profile = ctx.cfg, ctx.profile
    train_config = replace(cfg.train, crop_scale=(profile.train_scale[0], profile.train_scale[1]))
    if selection.student_source == "pruned":
        train_config = replace(train_config, lr=cfg.pruned_lr)
    progress = Progress(ctx.log)

    def train(loss: LossConfig, checkpoint: Path, stop_after: int | None) -> DistillResult:
        student, _ = initial_student(cfg, selection, ctx.teacher, ctx.folder, lambda _m: None)
        last = stop_after or cfg.train.epochs
        progress.start("training epochs")
        return distill(
            ctx.teacher.model, student, ctx.data, ctx.teacher.mean, ctx.teacher.std, loss,
            replace(train_config, stop_after=stop_after),
            on_epoch=lambda row: progress.tick(
                "training epochs", row["epoch"], last,
                f"loss {row['loss']:.4f}, val top-1 {row['val_top1']:.4f}",
            ),
            # a pilot's checkpoint is always continued: the winner's pilot is its first epochs
            checkpoint=checkpoint, resume=cfg.resume or checkpoint != ctx.folder.train_state,
        )  # fmt: skip

    return train


def _choose_recipe_and_train(ctx: RunContext, train: Any) -> DistillResult:
    """``--method auto``: pilots on the validation split, then the winner to the end
    (:mod:`compressor.train.recipes`); finished pilots are read back from pilot.json on resume."""
    cfg, folder, log = ctx.cfg, ctx.folder, ctx.log
    assert cfg.auto_recipes is not None
    finished: dict[str, PilotRow] = {}
    if cfg.resume and folder.pilot_record.is_file():
        finished = {r["recipe"]: PilotRow(**r) for r in read_json(folder.pilot_record)["pilots"]}
    rows = list(finished.values())
    log(f"choosing the recipe: {pilot_epochs(cfg.train.epochs)}-epoch pilots of "
        f"{', '.join(cfg.auto_recipes)}")  # fmt: skip

    def record(row: PilotRow) -> None:
        rows.append(row)
        log(f"pilot {row.recipe}: val top-1 {row.val_top1:.4f} ({row.seconds:.0f} s)")
        if distributed.info().is_main:
            write_json_atomic(folder.pilot_record, {"pilots": [asdict(r) for r in rows]})

    result, choice = choose_and_train(
        cfg.auto_recipes, cfg.loss, cfg.train.epochs, train, folder.root, finished, record,
        val_images=len(ctx.data.val),
    )  # fmt: skip
    log(f"recipe chosen on validation: {choice.winner} ({recipe_decision(choice.to_dict())})")
    if distributed.info().is_main:
        losers = [name for name in cfg.auto_recipes if name != choice.winner]
        RunFolder.remove(folder.pilot_checkpoint(name) for name in losers)
    result.recipe_choice = choice.to_dict()
    return result


def _save_student(ctx: RunContext, selection: Selection, result: DistillResult) -> None:
    """student.pt: a derived student is saved as the teacher's architecture plus its pruning
    record (per-layer widths), so it reloads with ``weights_only=True``."""
    record = None
    if selection.student_source == "pruned":
        record = load_bundle(ctx.folder.derived_student).pruning
    _write_bundle(ctx, ctx.folder.student_bundle, result.student, record)
    write_json_atomic(ctx.folder.distill_record, result.to_dict())


def save_derived(ctx: RunContext, model: torch.nn.Module, record: dict[str, Any]) -> None:
    """derived_init.pt: the chosen pruned copy before training (the distill stage's start)."""
    _write_bundle(ctx, ctx.folder.derived_student, model, record)


def _write_bundle(
    ctx: RunContext, path: Path, model: torch.nn.Module, pruning: dict[str, Any] | None
) -> None:
    teacher, data = ctx.teacher, ctx.data
    arch = pruning["base_arch"] if pruning else required(ctx.results.select, "select").chosen
    save_bundle(
        path,
        model,
        arch,
        num_classes=teacher.num_classes,
        in_channels=teacher.in_channels,
        input_size=ctx.profile.input_shape[1:],  # type: ignore[arg-type]
        mean=teacher.mean,
        std=teacher.std,
        class_names=data.class_names,
        extra={"teacher_sha256": teacher.sha256, "profile": ctx.profile.name},
        preprocess=data.preprocess.to_metadata() if data.preprocess else None,
        pruning=pruning,
    )


def initial_student(
    cfg: RunConfig, selection: Selection, teacher: ModelBundle, folder: RunFolder, log: Log
) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """The student before training: the derived copy selection saved (pruned from the teacher,
    BatchNorm recomputed), or seeded random weights, then ``--student-init`` if given."""
    if selection.student_source == "pruned":
        if not folder.derived_student.is_file():
            raise CompressorError(
                f"{folder.derived_student} is missing: the selection chose a derived student; "
                "re-run without --resume"
            )
        return load_bundle(folder.derived_student).model.train(), None
    arch = selection.chosen
    torch.manual_seed(cfg.train.seed)  # student initialisation is part of the seeded run
    student = build_model(arch, teacher.num_classes, teacher.in_channels)
    if cfg.student_init is None:
        return student, None
    init = load_student_init(student, arch, cfg.student_init, cfg.trust_checkpoint)
    if init is None:
        log(f"--student-init {cfg.student_init} has no {arch}.pt: {arch} starts from scratch")
        return student, None
    head = f", classifier re-initialised ({len(init.reinitialised)} tensors)"
    loaded = f"student starts from {init.path}: {init.loaded_tensors} tensors"
    log(loaded + head * bool(init.reinitialised))
    return student, init.to_dict()
