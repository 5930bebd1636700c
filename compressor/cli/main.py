"""The ``compressor`` command line: ``run``, ``demo`` and ``distill`` here; the single-stage
commands in :mod:`compressor.cli.stage_commands`; errors and exit codes in
:mod:`compressor.cli.app`.

Every default comes from the config dataclasses (``TrainConfig``, ``LossConfig``,
``RunConfig``), so the CLI, the library and run.json cannot disagree.

The exit codes are defined once, in :mod:`compressor.errors` (the README's table lists them).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

# registers the single-stage commands on the app
from compressor.cli import stage_commands as cli_commands  # noqa: F401
from compressor.cli.app import (
    EXAMPLE_RUN,
    app,
    finish,
    logger,
    parse_floats,
    parse_list,
    user_errors,
)
from compressor.cli.options import (
    AlphaOpt,
    ArchOpt,
    AugmentOpt,
    BatchSizeOpt,
    BetaOpt,
    BiasAwareOpt,
    BiasWeightingOpt,
    CandidatesOpt,
    CeWeightOpt,
    CompileOpt,
    DataCacheOpt,
    DataOpt,
    DataStorageOpt,
    DebugOpt,
    DeterministicOpt,
    DeviceOpt,
    EpochsOpt,
    FamilyOpt,
    HflipOpt,
    InterpolationOpt,
    JsonOpt,
    LrOpt,
    MeanOpt,
    OutFolderOpt,
    OverwriteOpt,
    PrecisionOpt,
    PrunedLrOpt,
    QuietOpt,
    RectificationOpt,
    ResizeModeOpt,
    ResizeSizeOpt,
    ResumeOpt,
    RunProfileOpt,
    ScheduleOpt,
    SeedOpt,
    SelectionMemoryOpt,
    StdOpt,
    StudentInitOpt,
    StudentSourceOpt,
    TeacherOpt,
    TemperatureOpt,
    TrustOpt,
    ValFractionOpt,
    WarmupOpt,
    keep_recorded,
)
from compressor.config.loss import LossConfig
from compressor.config.run import RUN_DEFAULTS, RunConfig
from compressor.config.train import TrainConfig
from compressor.errors import EXIT_INTERNAL_ERROR, CompressorError
from compressor.losses.methods import methods_help
from compressor.train.recipes import DEFAULT_RECIPES, RECIPES

TRAIN, LOSS, RUN = TrainConfig(), LossConfig(), RUN_DEFAULTS

MethodOpt = Annotated[
    str,
    typer.Option(
        help=f"Distillation loss: {methods_help()}; or auto: short pilots of --auto-recipes "
        "from the same weights and batches, the best on the validation split continued to the "
        "end (docs/benchmarks.md)."
    ),
]
AutoRecipesOpt = Annotated[
    str | None,
    typer.Option(
        help=f"With --method auto: recipes to pilot, from {', '.join(RECIPES)} "
        f"[default: {','.join(DEFAULT_RECIPES)}]."
    ),
]


@app.command(
    help=f"Run every stage: select, distill, export, verify, report.\n\nExample:\n\n  {EXAMPLE_RUN}"
)
def run(
    out: OutFolderOpt,
    teacher: TeacherOpt = None,
    data: DataOpt = None,
    profile: RunProfileOpt = None,
    resume: ResumeOpt = False,
    arch: ArchOpt = RUN["arch"],
    family: FamilyOpt = RUN["family"],
    candidates: CandidatesOpt = None,
    epochs: EpochsOpt = TRAIN.epochs,
    batch_size: BatchSizeOpt = TRAIN.batch_size,
    lr: LrOpt = TRAIN.lr,
    method: MethodOpt = LOSS.method,
    auto_recipes: AutoRecipesOpt = None,
    bias_aware: BiasAwareOpt = LOSS.bias_aware,
    ce_weight: CeWeightOpt = LOSS.ce_weight,
    temperature: TemperatureOpt = LOSS.temperature,
    alpha: AlphaOpt = LOSS.alpha,
    beta: BetaOpt = LOSS.beta,
    warmup_epochs: WarmupOpt = LOSS.warmup_epochs,
    schedule: ScheduleOpt = LOSS.schedule,
    rectification: RectificationOpt = LOSS.rectification,
    bias_weighting: BiasWeightingOpt = LOSS.bias_weighting,
    augment: AugmentOpt = TRAIN.augment,
    hflip: HflipOpt = TRAIN.hflip,
    device: DeviceOpt = TRAIN.device,
    precision: PrecisionOpt = TRAIN.precision,
    compile_step: CompileOpt = TRAIN.compile,
    deterministic: DeterministicOpt = TRAIN.deterministic,
    data_cache: DataCacheOpt = RUN["data_cache"],
    data_in_memory: DataStorageOpt = None,
    seed: SeedOpt = TRAIN.seed,
    val_fraction: ValFractionOpt = RUN["val_fraction"],
    mean: MeanOpt = None,
    std: StdOpt = None,
    resize_mode: ResizeModeOpt = RUN["resize_mode"],
    resize_size: ResizeSizeOpt = RUN["resize_size"],
    interpolation: InterpolationOpt = RUN["interpolation"],
    student_init: StudentInitOpt = RUN["student_init"],
    student_source: StudentSourceOpt = RUN["student_source"],
    pruned_lr: PrunedLrOpt = RUN["pruned_lr"],
    selection_memory: SelectionMemoryOpt = RUN["selection_memory"],
    trust_checkpoint: TrustOpt = RUN["trust_checkpoint"],
    overwrite: OverwriteOpt = RUN["overwrite"],
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    from compressor.pipeline.context import load_run_config
    from compressor.pipeline.runner import run_pipeline

    options = dict(locals())
    started = time.perf_counter()
    with user_errors(debug):
        cfg = load_run_config(out) if resume else run_config(options)
        outcome = run_pipeline(cfg, logger(quiet or json_out))
    finish(outcome, json_out, started)


def run_config(options: dict[str, Any]) -> RunConfig:
    """``compressor run``'s options as a RunConfig: each option fills the dataclass field of
    the same name; the few that need parsing are converted here."""
    from compressor.train.recipes import parse_recipes

    missing = [name for name in ("teacher", "data", "profile") if options[name] is None]
    if missing:
        flags = ", ".join(f"--{name}" for name in missing)
        raise CompressorError(f"missing {flags} (see: {EXAMPLE_RUN})")
    pilots = parse_recipes(options["auto_recipes"]) if options["method"] == "auto" else None
    if options["auto_recipes"] is not None and pilots is None:
        raise CompressorError("--auto-recipes needs --method auto")
    options = {**options, "compile": options["compile_step"]}
    loss_options = {**_fields(LossConfig, options), "method": "kd" if pilots else options["method"]}
    loss = _checked_loss(lambda: LossConfig(**loss_options))
    in_memory = options["data_in_memory"]
    return RunConfig(
        **_fields(RunConfig, options),
        candidates=parse_list(options["candidates"]),
        mean=parse_floats(options["mean"], "mean"),
        std=parse_floats(options["std"], "std"),
        data_storage="auto" if in_memory is None else ("memory" if in_memory else "stream"),
        auto_recipes=pilots,
        loss=loss,
        train=TrainConfig(**_fields(TrainConfig, options)),
    )


_PARSED = {"candidates", "mean", "std", "data_storage", "auto_recipes", "loss", "train"}


def _fields(config: type, options: dict[str, Any]) -> dict[str, Any]:
    """The options named like a field of ``config`` (those parsed separately left out)."""
    names = {field.name for field in dataclasses.fields(config)} - _PARSED
    return {name: value for name, value in options.items() if name in names}


@app.command(
    help="Run the whole pipeline on embedded handwritten digits (no arguments, no network)."
    "\n\nExample:\n\n  compressor demo"
)
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's data, teacher and run.")] = Path(
        "runs/demo"
    ),
    epochs: Annotated[int, typer.Option(min=1, help="Student training epochs.")] = 15,
    teacher_epochs: Annotated[int, typer.Option(min=1, help="Teacher training epochs.")] = 12,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    from compressor.pipeline.demo import (
        build_digits_imagefolder,
        demo_run_config,
        train_demo_teacher,
    )
    from compressor.pipeline.runner import run_pipeline

    started = time.perf_counter()
    log = logger(quiet or json_out)
    with user_errors(debug):
        data = build_digits_imagefolder(out / "data", seed=seed)
        teacher = out / "teacher.pt"
        if not teacher.exists():
            log(f"training the demo teacher ({teacher_epochs} epochs) -> {teacher}")
            train_demo_teacher(data, teacher, epochs=teacher_epochs, seed=seed)
        else:
            log(f"reusing the demo teacher {teacher}")
        outcome = run_pipeline(demo_run_config(out, data, teacher, epochs, seed), log)
    finish(outcome, json_out, started)


# `compressor distill`: the run's options, None meaning "keep what run.json recorded"
KeptEpochs, KeptLr, KeptMethod = map(keep_recorded, (EpochsOpt, LrOpt, MethodOpt))
KeptBiasAware, KeptRectification = map(keep_recorded, (BiasAwareOpt, RectificationOpt))
KeptBiasWeighting, KeptSchedule = map(keep_recorded, (BiasWeightingOpt, ScheduleOpt))
KeptSeed, KeptDevice, KeptPrecision = map(keep_recorded, (SeedOpt, DeviceOpt, PrecisionOpt))
KeptDeterministic = keep_recorded(DeterministicOpt)


@app.command(
    "distill",
    help="Re-run only the distillation stage in a run folder (its run.json and selection.json), "
    "optionally with other training settings; writes student.pt and distill.json and removes "
    "the now-stale export and reports.\n\nExample:\n\n"
    "  compressor distill --out runs/exp1 --epochs 60 --rectification swap",
)
def distill_cmd(
    out: Annotated[Path, typer.Option(help="Run folder written by `compressor run`.")],
    epochs: KeptEpochs = None,
    lr: KeptLr = None,
    method: KeptMethod = None,
    bias_aware: KeptBiasAware = None,
    rectification: KeptRectification = None,
    bias_weighting: KeptBiasWeighting = None,
    schedule: KeptSchedule = None,
    seed: KeptSeed = None,
    device: KeptDevice = None,
    precision: KeptPrecision = None,
    compile_step: CompileOpt = None,
    deterministic: KeptDeterministic = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    from compressor.pipeline.context import load_run_config
    from compressor.pipeline.runner import distill_stage_only
    from compressor.run_folder import RunFolder

    changes = {**locals(), "compile": compile_step}
    with user_errors(debug):
        cfg = _with_changes(load_run_config(out), changes)
        result = distill_stage_only(cfg, logger(quiet))
    if result is None:  # another rank under torchrun: rank 0 reports
        return
    typer.echo(
        f"distilled: best validation top-1 {100 * result.best_val_top1:.2f}% at epoch "
        f"{result.best_epoch}; wrote {RunFolder(cfg.out).student_bundle}. Next: compressor "
        f"export / verify, or compressor run --resume --out {out}"
    )


def _checked_loss(build: Callable[[], LossConfig]) -> LossConfig:
    """The loss settings, their method checked against the registry: one line on a bad value."""
    from compressor.losses.methods import get_method

    try:
        loss = build()
        get_method(loss.method)
    except ValueError as exc:
        raise CompressorError(str(exc)) from exc
    return loss


def _with_changes(cfg: RunConfig, changes: dict[str, Any]) -> RunConfig:
    """A run's configuration with the options the user gave (None: keep the recorded value)."""
    from compressor.train.recipes import parse_recipes

    given = {name: value for name, value in changes.items() if value is not None}
    if "method" in given:  # auto pilots the default recipes, any other method ends auto
        auto = given["method"] == "auto"
        cfg = dataclasses.replace(cfg, auto_recipes=parse_recipes(None) if auto else None)
        if auto:
            del given["method"]
    loss = _checked_loss(lambda: dataclasses.replace(cfg.loss, **_fields(LossConfig, given)))
    train = dataclasses.replace(cfg.train, **_fields(TrainConfig, given))
    if "lr" in given:  # the folder's student is fresh (--lr) or derived (--pruned-lr): set both
        cfg = dataclasses.replace(cfg, pruned_lr=given["lr"])
    return dataclasses.replace(cfg, loss=loss, train=train)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except Exception:  # a bug, not bad input: keep the traceback
        traceback.print_exc()
        sys.exit(EXIT_INTERNAL_ERROR)
