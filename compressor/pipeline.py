"""Runs the stages in order: validate inputs, select, distill, export, verify, report.

Every input is validated (profile, teacher, data, output folder) and the student is selected
*before* the run folder is created, so bad input leaves nothing behind. Each stage then writes
its artifact atomically into the run folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from compressor import __version__, distributed
from compressor.checkpoint import ModelBundle, load_bundle, save_bundle
from compressor.data import DatasetSplits, load_image_folder, normalize
from compressor.data_cache import default_cache_dir
from compressor.distill import DistillResult, TrainConfig, distill
from compressor.errors import CompressorError
from compressor.export import export_onnx, model_metadata, onnx_bytes
from compressor.io import read_json, write_json_atomic
from compressor.latency import TimingSettings, measure_alternating
from compressor.losses import LossConfig
from compressor.preprocess import Preprocess, resolve_preprocess
from compressor.profile import LatencyProfile, load_profile
from compressor.progress import Progress
from compressor.quantize import decide_int8, int8_for_timing, quantize_int8
from compressor.recipes import (
    RECIPES,
    PilotRow,
    Trainer,
    checkpoint_path,
    choose_and_train,
    pilot_epochs,
    recipe_loss,
)
from compressor.report import provenance, write_report
from compressor.select import Candidate, Selection, choose_student
from compressor.student_init import load_student_init
from compressor.students import (
    build_model,
    count_flops,
    count_params,
    families_to_try,
    get_family,
)
from compressor.verify import VerifyReport, make_gate, verify_onnx

Log = Callable[[str], None]
T = TypeVar("T")
RUN_MARKER = "run.json"
TRAIN_STATE = "train_state.pt"
PILOT_RECORD = "pilot.json"  # --method auto: the finished pilots


@dataclass(frozen=True)
class RunConfig:
    """Everything ``compressor run`` needs."""

    teacher: Path
    data: Path
    profile: str
    out: Path
    arch: str | None = None
    family: str | None = None
    candidates: tuple[str, ...] | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    val_fraction: float = 0.1
    trust_checkpoint: bool = False
    overwrite: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resume: bool = False
    data_cache: bool = True  # keep decoded images on disk between runs (data_cache module)
    resize_mode: str | None = None  # the teacher's eval transform, as stated on the CLI
    resize_size: int | None = None
    interpolation: str | None = None
    student_init: Path | None = None  # pretrained student weights: a file, or a folder of <arch>.pt
    auto_recipes: tuple[str, ...] | None = None  # --method auto: recipes to pilot (recipes.py)
    data_storage: str = "auto"  # decoded images in memory, streamed from disk, or chosen by size


@dataclass
class RunOutcome:
    """What the CLI needs to print and which exit code to use."""

    report: dict[str, Any]
    verify: VerifyReport
    out: Path

    @property
    def exit_code(self) -> int:
        return int(self.report["exit_code"])


def check_output_folder(out: Path, overwrite: bool, resume: bool = False) -> None:
    """Refuse to mix two runs in one folder unless the user asked to overwrite or resume."""
    if out.exists() and not out.is_dir():
        raise CompressorError(f"output path exists and is not a folder: {out}")
    if resume:
        if not (out / RUN_MARKER).is_file():
            raise CompressorError(f"nothing to resume: {out} has no {RUN_MARKER}")
        return
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CompressorError(
            f"output folder {out} is not empty; pass --overwrite to replace it or --resume to "
            "continue the run in it"
        )


def prepare_output_folder(out: Path, overwrite: bool) -> None:
    if out.is_dir() and overwrite:
        if any(out.iterdir()) and not (out / RUN_MARKER).exists():
            raise CompressorError(
                f"refusing to overwrite {out}: it is not a compressor run folder (no {RUN_MARKER})"
            )
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CompressorError(f"cannot write to output folder {out}: {exc.strerror}") from exc


def load_run_config(out: Path) -> RunConfig:
    """The configuration a run folder was started with (for ``--resume``)."""
    check_output_folder(out, overwrite=False, resume=True)
    try:
        raw = read_json(out / RUN_MARKER)["config"]
        return RunConfig(
            **{
                **raw,
                "teacher": Path(raw["teacher"]),
                "student_init": Path(raw["student_init"]) if raw.get("student_init") else None,
                "data": Path(raw["data"]),
                "out": out,
                "candidates": tuple(raw["candidates"]) if raw["candidates"] else None,
                "auto_recipes": tuple(raw["auto_recipes"]) if raw.get("auto_recipes") else None,
                "mean": tuple(raw["mean"]) if raw["mean"] else None,
                "std": tuple(raw["std"]) if raw["std"] else None,
                "loss": LossConfig(**raw["loss"]),
                "train": TrainConfig(**raw["train"]),
                "overwrite": False,
                "resume": True,
            }
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CompressorError(
            f"{out / RUN_MARKER} is damaged or from another version: {exc}"
        ) from exc


def check_channels(teacher: ModelBundle, profile: LatencyProfile) -> None:
    """The teacher's input channels must match the profile's, before anything is decoded."""
    channels = profile.input_shape[0]
    if teacher.in_channels != channels:
        raise CompressorError(
            f"teacher expects {teacher.in_channels}-channel input but profile '{profile.name}' "
            f"has {channels} channel(s) (input.shape = {list(profile.input_shape)})"
        )


def check_compatibility(
    teacher: ModelBundle, profile: LatencyProfile, data: DatasetSplits
) -> list[str]:
    """Errors for teacher/profile/data combinations that cannot work; warnings for odd ones."""
    check_channels(teacher, profile)
    classes = len(data.class_names)
    if teacher.num_classes != classes:
        raise CompressorError(
            f"class count mismatch: teacher has {teacher.num_classes} classes, "
            f"data {data.root} has {classes}"
        )
    if teacher.class_names and teacher.class_names != data.class_names:
        raise CompressorError(
            f"class names differ: teacher {teacher.class_names[:4]}..., "
            f"data {data.class_names[:4]}..."
        )
    warnings = []
    if teacher.input_size and tuple(teacher.input_size) != tuple(profile.input_shape[1:]):
        warnings.append(
            f"teacher was saved for input {list(teacher.input_size)} but the profile feeds "
            f"{list(profile.input_shape[1:])}"
        )
    if data.skipped:
        warnings.append(f"{len(data.skipped)} unreadable file(s) skipped, e.g. {data.skipped[0]}")
    return warnings


def _on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result, or its failure, to every rank.

    Every failure is forwarded, not only a CompressorError: a bug or Ctrl-C on rank 0 must stop
    the other ranks now, not after a collective's timeout. Rank 0 re-raises its own exception
    (with its traceback); the others raise the CompressorError, or a RankZeroFailure naming the
    exception. The other ranks wait in a gloo collective (distributed.broadcast_from_main).
    """
    if distributed.info().world_size <= 1:
        return fn()
    payload: Any = None
    failure: BaseException | None = None
    if distributed.info().is_main:
        try:
            payload = fn()
        except BaseException as exc:  # forwarded below, then re-raised unchanged
            failure = exc
            payload = (
                exc
                if isinstance(exc, CompressorError)
                else distributed.RankZeroFailure(f"rank 0 failed: {type(exc).__name__}: {exc}")
            )
    payload = distributed.broadcast_from_main(payload)
    if failure is not None:
        raise failure
    if isinstance(payload, CompressorError | distributed.RankZeroFailure):
        raise payload
    return payload


def run_pipeline(cfg: RunConfig, log: Log = lambda _msg: None) -> RunOutcome | None:
    """Run every stage; under torchrun, rank 0 returns the outcome and the others None."""
    distributed.init_distributed(cfg.train.device)
    try:
        return _run_stages(cfg, log if distributed.info().is_main else lambda _msg: None)
    finally:
        distributed.shutdown()


def _run_stages(cfg: RunConfig, log: Log) -> RunOutcome | None:
    """Run every stage and write the run folder. Raises CompressorError for bad input.

    With ``cfg.resume`` the stages whose artifacts exist are not redone and training continues
    from the last completed epoch; verification and the report are always produced afresh.
    """
    check_output_folder(cfg.out, cfg.overwrite, cfg.resume)
    out = cfg.out
    profile = load_profile(cfg.profile)
    teacher = _load_bundle(cfg, profile)
    log(f"teacher: {teacher.arch} ({teacher.format}), {teacher.num_classes} classes")
    preprocess = resolve_run_preprocess(cfg, profile, teacher)
    log(f"preprocessing: {preprocess.describe()}")
    data = _load_data(cfg, profile, preprocess, log)
    log(
        f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images, "
        f"{len(data.class_names)} classes (test = {data.test_source})"
    )
    warnings = check_compatibility(teacher, profile, data)
    for w in warnings:
        log(f"warning: {w}")
    resumed: list[str] = []

    if cfg.resume and (out / "selection.json").is_file():
        selection = Selection.from_dict(read_json(out / "selection.json"))
        resumed.append("select")
        log(f"resume: selection done before, student {selection.chosen}")
    else:
        input_hw = (profile.input_shape[1], profile.input_shape[2])
        families = families_to_try(cfg.family, bool(cfg.candidates), teacher.arch, input_hw)
        family = families[0]

        progress = Progress(log)
        total = len(cfg.candidates or get_family(family).ladder)
        timed: list[Candidate] = []

        def on_candidate(c: Candidate) -> None:
            timed.append(c)
            ms = c.predicted_ms if c.predicted_ms is not None else c.at_percentile_ms
            detail = f"{c.name} p{profile.percentile:g} {ms:.3f} ms ({c.precision}), fits={c.fits}"
            if c.speedup is not None:
                detail += f", {c.speedup:.2f}x faster than the teacher"
            progress.tick("timing candidates", len(timed), total, detail)

        def select_and_record() -> Selection:
            budget = f"{profile.latency_ms:g} ms at p{profile.percentile:g}"
            log(f"selecting a {' / '.join(families)} student for {budget}")
            progress.start("timing candidates")
            chosen = choose_student(
                profile,
                teacher.model,
                teacher.arch,
                teacher.num_classes,
                families,
                candidates=cfg.candidates,
                on_candidate=on_candidate,
                to_shipped=shipped_graph(profile),
                log=log,
            )
            log(f"chosen: {chosen.chosen}")
            # bad --student-init weights end the run here, before anything is written
            _initial_student(cfg, chosen.chosen, teacher, lambda _m: None)
            if not cfg.resume:
                prepare_output_folder(out, cfg.overwrite)
                marker = {"compressor": __version__, "config": _config_dict(cfg)}
                write_json_atomic(out / RUN_MARKER, marker)
            write_json_atomic(out / "selection.json", chosen.to_dict())
            return chosen

        selection = _on_main(select_and_record)

    result = _distill_stage(cfg, profile, teacher, data, selection, resumed, log)
    if not distributed.info().is_main:
        return None  # rank 0 exports, verifies and reports
    shape = profile.input_shape

    if cfg.resume and (out / "student.onnx").is_file() and (out / "export.json").is_file():
        exported = read_json(out / "export.json")
        resumed.append("export")
    else:
        log("exporting student.onnx")
        exported = export_onnx(
            result.student,
            shape,
            out / "student.onnx",
            opset=profile.opset,
            metadata=model_metadata(
                class_names=data.class_names,
                preprocess=preprocess.to_metadata(),
                input_shape=shape,
                arch=selection.chosen,
                profile=profile.name,
                teacher_sha256=teacher.sha256,
            ),
        ).to_dict()
        write_json_atomic(out / "export.json", exported)

    log("verifying with onnxruntime on CPU")
    student_mflops = count_flops(result.student, shape) / 1e6
    verified = verify_onnx(
        out / "student.onnx",
        data.test,
        teacher.mean,
        teacher.std,
        profile,
        reference=result.student,
        teacher=teacher.model.cpu(),
        predict_target=lambda ms: selection.predict(ms, student_mflops),
    )
    write_json_atomic(out / "verify.json", verified.to_dict())
    int8 = None
    if profile.quantization == "int8":
        int8 = _int8_stage(cfg, profile, teacher, data, verified, log)
    report = build_report(
        cfg, profile, teacher, data, selection, result, exported, verified, warnings
    )
    if int8 is not None:
        report["int8"] = int8
        if int8["decision"]["use_int8"]:
            # The shipped model is the int8 one: its own accuracy and latency gates decide,
            # next to the fp32 export's parity gates (int8 cannot meet fp32 logit tolerances).
            int8_gates = [g for g in int8["verify"]["gates"]]
            parity = [g for g in report["gates"] if g["name"].startswith("parity_")]
            report["gates"] = parity + [{**g, "name": f"int8_{g['name']}"} for g in int8_gates]
            _set_verdict(report)
    ships_int8 = bool(int8 and int8["decision"]["use_int8"])
    report["shipped_model"] = str(out / ("student.int8.onnx" if ships_int8 else "student.onnx"))
    report["shipped"] = {
        "model": report["shipped_model"],
        "precision": "int8" if ships_int8 else "fp32",
        "latency": int8["verify"]["latency"] if int8 and ships_int8 else report["latency"],
    }
    report["speedup"] = _speedup_vs_teacher(teacher, Path(report["shipped_model"]), profile, log)
    _add_speedup_gate(report)
    report["resumed"] = (
        {
            "stages_skipped": resumed,
            "from_epoch": result.resumed_from_epoch,
        }
        if cfg.resume
        else None
    )
    write_report(out, report)
    return RunOutcome(report=report, verify=verified, out=out)


def _speedup_vs_teacher(
    teacher: ModelBundle, shipped: Path, profile: LatencyProfile, log: Log
) -> dict[str, Any]:
    """Teacher and shipped student timed in alternation under the profile's settings.

    Selection already required ``min_speedup`` from one measurement of each; this is the
    number the report quotes, measured with machine noise hitting both models alike.
    """
    try:
        graph = onnx_bytes(teacher.model, profile.input_shape, profile.opset)
    except CompressorError as exc:
        log(f"warning: the teacher could not be exported for timing ({exc}); no speedup measured")
        return {"measured": False, "note": str(exc)}
    log("timing the teacher and the shipped student in alternation (measured speedup)")
    teacher_stats, student_stats = measure_alternating(
        [graph, shipped],
        profile.input_shape,
        TimingSettings.from_profile(profile),
        profile.percentile,
    )
    teacher_ms, student_ms = teacher_stats.at_percentile_ms, student_stats.at_percentile_ms
    return {
        "measured": True,
        "method": "alternating sessions, 3 rounds, order flipped each round",
        "percentile": profile.percentile,
        "teacher_ms": teacher_ms,
        "student_ms": student_ms,
        "speedup": teacher_ms / max(student_ms, 1e-9),
        "min_speedup": profile.min_speedup,
        "teacher": teacher_stats.to_dict(),
        "student": student_stats.to_dict(),
    }


def _add_speedup_gate(report: dict[str, Any]) -> None:
    """A shipped student slower than its teacher fails the run: it compresses nothing."""
    speed = report["speedup"]
    if speed.get("measured"):
        gate = make_gate("faster_than_teacher", speed["speedup"], 1.0, ">=", "x")
        report["gates"].append(asdict(gate))
        _set_verdict(report)


def _set_verdict(report: dict[str, Any]) -> None:
    """``passed``, ``exit_code`` and ``failed_gates`` from the report's gates."""
    report["passed"] = all(g["passed"] for g in report["gates"])
    report["exit_code"] = 0 if report["passed"] else 1
    report["failed_gates"] = [g["name"] for g in report["gates"] if not g["passed"]]


def _int8_stage(
    cfg: RunConfig,
    profile: LatencyProfile,
    teacher: ModelBundle,
    data: DatasetSplits,
    fp32: VerifyReport,
    log: Log,
) -> dict[str, Any]:
    """Quantize with ~300 training images, verify, and keep int8 only if it proves better."""
    out = cfg.out
    pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.train.seed))
    calibration = normalize(data.train.read(pick[:300]), teacher.mean, teacher.std).numpy()
    log(f"int8: calibrating on {len(calibration)} training images")
    quant = quantize_int8(out / "student.onnx", out / "student.int8.onnx", calibration)
    int8_verified = verify_onnx(
        out / "student.int8.onnx",
        data.test,
        teacher.mean,
        teacher.std,
        profile,
        teacher=teacher.model.cpu(),
    )
    log("int8: timing fp32 and int8 in alternation for the keep-or-drop decision")
    fp32_timed, int8_timed = measure_alternating(
        [out / "student.onnx", out / "student.int8.onnx"],
        profile.input_shape,
        TimingSettings.from_profile(profile),
        profile.percentile,
    )
    decision = decide_int8(fp32, int8_verified, profile.max_top1_drop, (fp32_timed, int8_timed))
    log(f"int8: {decision.reason}")
    if not decision.use_int8:
        (out / "student.int8.onnx").unlink()
    payload = {
        "quantize": quant.to_dict(),
        "verify": int8_verified.to_dict(),
        "decision": decision.to_dict(),
        "alternating_latency": {"fp32": fp32_timed.to_dict(), "int8": int8_timed.to_dict()},
    }
    write_json_atomic(out / "int8.json", payload)
    return payload


def _distill_stage(
    cfg: RunConfig,
    profile: LatencyProfile,
    teacher: ModelBundle,
    data: DatasetSplits,
    selection: Selection,
    resumed: list[str],
    log: Log,
) -> DistillResult:
    """Train (or, when resuming a finished stage, reload) the student."""
    out = cfg.out
    if cfg.resume and (out / "student.pt").is_file() and (out / "distill.json").is_file():
        resumed.append("distill")
        log("resume: distillation done before")
        saved = read_json(out / "distill.json")
        return DistillResult(student=load_bundle(out / "student.pt").model, **saved)
    _student, init = _initial_student(cfg, selection.chosen, teacher, log)  # checks, logs once
    log(f"distilling {selection.chosen} for {cfg.train.epochs} epochs")
    train_config = replace(cfg.train, crop_scale=(profile.train_scale[0], profile.train_scale[1]))
    progress = Progress(log)

    def train(loss: LossConfig, checkpoint: Path, stop_after: int | None) -> DistillResult:
        """One training from the seeded (or --student-init) weights, resumed from
        ``checkpoint`` when it exists; ``stop_after`` ends a pilot early."""
        student, _ = _initial_student(cfg, selection.chosen, teacher, lambda _m: None)
        last = stop_after or cfg.train.epochs
        progress.start("training epochs")
        return distill(
            teacher.model, student, data, teacher.mean, teacher.std, loss,
            replace(train_config, stop_after=stop_after),
            on_epoch=lambda row: progress.tick(
                "training epochs", row["epoch"], last,
                f"loss {row['loss']:.4f}, val top-1 {row['val_top1']:.4f}",
            ),
            # a pilot's checkpoint is always continued: the winner's pilot is its first epochs
            checkpoint=checkpoint, resume=cfg.resume or checkpoint != out / TRAIN_STATE,
        )  # fmt: skip

    if cfg.auto_recipes:
        result = _choose_recipe_and_train(cfg, train, log)
    else:
        result = train(cfg.loss, out / TRAIN_STATE, None)
    if result.resumed_from_epoch:
        log(f"resumed training after epoch {result.resumed_from_epoch}")
    result.student_init = init
    if not distributed.info().is_main:
        return result
    save_bundle(
        out / "student.pt",
        result.student,
        selection.chosen,
        num_classes=teacher.num_classes,
        in_channels=teacher.in_channels,
        input_size=profile.input_shape[1:],  # type: ignore[arg-type]
        mean=teacher.mean,
        std=teacher.std,
        class_names=data.class_names,
        extra={"teacher_sha256": teacher.sha256, "profile": profile.name},
        preprocess=data.preprocess.to_metadata() if data.preprocess else None,
    )
    write_json_atomic(out / "distill.json", result.to_dict())
    return result


def _choose_recipe_and_train(cfg: RunConfig, train: Trainer, log: Log) -> DistillResult:
    """``--method auto``: pilots on the validation split, then the winner to the end
    (:mod:`compressor.recipes`); finished pilots are read back from pilot.json on resume."""
    assert cfg.auto_recipes is not None
    out = cfg.out
    finished: dict[str, PilotRow] = {}
    if cfg.resume and (out / PILOT_RECORD).is_file():
        finished = {r["recipe"]: PilotRow(**r) for r in read_json(out / PILOT_RECORD)["pilots"]}
    rows = list(finished.values())
    n = pilot_epochs(cfg.train.epochs)
    log(f"choosing the recipe: {n}-epoch pilots of {', '.join(cfg.auto_recipes)}")

    def record(row: PilotRow) -> None:
        rows.append(row)
        log(f"pilot {row.recipe}: val top-1 {row.val_top1:.4f} ({row.seconds:.0f} s)")
        if distributed.info().is_main:
            write_json_atomic(out / PILOT_RECORD, {"pilots": [asdict(r) for r in rows]})

    result, choice = choose_and_train(
        cfg.auto_recipes, cfg.loss, cfg.train.epochs, train, out, finished, record
    )
    log(f"recipe chosen on validation: {choice.winner}")
    if distributed.info().is_main:
        for name in cfg.auto_recipes:
            if name != choice.winner:
                checkpoint_path(out, name).unlink(missing_ok=True)
    result.recipe_choice = choice.to_dict()
    return result


def _loss_used(cfg: RunConfig, recipe_choice: dict[str, Any] | None) -> LossConfig:
    """The loss the shipped student trained with: the auto winner's, or the configured one."""
    return recipe_loss(recipe_choice["winner"], cfg.loss) if recipe_choice else cfg.loss


def _initial_student(
    cfg: RunConfig, arch: str, teacher: ModelBundle, log: Log
) -> tuple[torch.nn.Module, dict[str, Any] | None]:
    """The student before training: seeded random weights, then ``--student-init`` if given."""
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


def _load_bundle(cfg: RunConfig, profile: LatencyProfile) -> ModelBundle:
    """The teacher; a state dict's normalisation comes from the CLI, else the profile."""
    return load_bundle(
        cfg.teacher,
        arch=cfg.arch,
        trust_checkpoint=cfg.trust_checkpoint,
        mean=cfg.mean or profile.mean,
        std=cfg.std or profile.std,
    )


def resolve_run_preprocess(
    cfg: RunConfig, profile: LatencyProfile, teacher: ModelBundle
) -> Preprocess:
    """The teacher's eval transform: CLI flags, then the bundle's record, then the profile."""
    check_channels(teacher, profile)
    channels, height, width = profile.input_shape
    stated = {
        "resize_mode": cfg.resize_mode,
        "resize_size": cfg.resize_size,
        "interpolation": cfg.interpolation,
    }
    return resolve_preprocess(
        (height, width),
        channels,
        teacher.mean,
        teacher.std,
        stated,
        teacher.preprocess,
        profile.preprocess_layer(),
    )


def shipped_graph(profile: LatencyProfile) -> Callable[[bytes], bytes] | None:
    """How selection turns a candidate into the graph that ships (int8 profiles)."""
    if profile.quantization != "int8":
        return None
    return lambda graph: int8_for_timing(graph, profile.input_shape)


def _load_data(
    cfg: RunConfig, profile: LatencyProfile, preprocess: Preprocess, log: Log
) -> DatasetSplits:
    return load_image_folder(
        cfg.data,
        profile.input_shape,
        seed=cfg.train.seed,
        val_fraction=cfg.val_fraction,
        cache_dir=default_cache_dir() if cfg.data_cache else None,
        log=log,
        preprocess=preprocess,
        storage=cfg.data_storage,
        processes_per_host=distributed.processes_per_host(),
    )


def _config_dict(cfg: RunConfig) -> dict[str, Any]:
    out = asdict(cfg)
    for key in ("teacher", "data", "out", "student_init"):
        out[key] = str(out[key]) if out[key] is not None else None
    return out


def build_report(
    cfg: RunConfig,
    profile: LatencyProfile,
    teacher: ModelBundle,
    data: DatasetSplits,
    selection: Selection,
    result: DistillResult,
    exported: dict[str, Any],
    verified: VerifyReport,
    warnings: list[str],
) -> dict[str, Any]:
    """Assemble the report.json payload (keys documented in docs/report.md)."""
    shape = profile.input_shape
    student_params = count_params(result.student)
    teacher_params = count_params(teacher.model)
    distilled = result.to_dict()
    return {
        "passed": verified.passed,
        "exit_code": 0 if verified.passed else 1,
        "failed_gates": [g.name for g in verified.failed()],
        "teacher": teacher.describe(),
        "profile": profile.to_dict(),
        "data": data.describe(),
        "selection": selection.to_dict(),
        "distillation": {
            "loss": asdict(_loss_used(cfg, distilled.get("recipe_choice"))),
            "train": asdict(cfg.train),
            "device": distilled["device"],
            "step": distilled["step"],
            "world_size": distilled["world_size"],
            "best_epoch": distilled["best_epoch"],
            "best_val_top1": distilled["best_val_top1"],
            "student_init": distilled.get("student_init"),
            "recipe_choice": distilled.get("recipe_choice"),
            "teacher_val_top1": distilled["teacher_val_top1"],
            "seconds": distilled["seconds"],
            "history": distilled["history"],
        },
        "bias": {
            "teacher_train_error": result.teacher_train_error,
            "teacher_train_error_per_class": dict(
                zip(data.class_names, result.teacher_train_error_per_class, strict=True)
            ),
            "teacher_confusion": result.teacher_train_confusion,
            "per_epoch": [
                {
                    "epoch": row["epoch"],
                    "teacher_wrong_fraction": row["teacher_wrong_fraction"],
                    "teacher_wrong_per_class": dict(
                        zip(data.class_names, row["teacher_wrong_per_class"], strict=True)
                    ),
                    "rectified": row["n_rectified"],
                    "b": row.get("b"),
                }
                for row in result.history
            ],
        },
        "accuracy": {
            "images": verified.images,
            "teacher_top1": verified.teacher_top1,
            "student_top1": verified.student_top1,
            "student_top5": verified.student_top5,
            "top1_drop": verified.top1_drop,
        },
        "parity": verified.parity,
        "latency": {
            **verified.latency.to_dict(),
            "repeats_at_percentile_ms": verified.latency_repeats,
            "spread": verified.latency_spread,
            "predicted_target_ms": verified.predicted_target_ms,
            "budget_utilisation": (
                verified.predicted_target_ms or verified.latency.at_percentile_ms
            )
            / profile.latency_ms,
        },
        "gates": [asdict(g) for g in verified.gates],
        "size": {
            "teacher_params": teacher_params,
            "student_params": student_params,
            "param_ratio": teacher_params / max(student_params, 1),
            "teacher_mflops": count_flops(teacher.model, shape) / 1e6,
            "student_mflops": count_flops(result.student, shape) / 1e6,
            "onnx_bytes": exported["size_bytes"],
        },
        "export": exported,
        "artifacts": {
            name: str(cfg.out / name)
            for name in (
                "student.onnx",
                "report.md",
                "report.html",
                "student.pt",
                "selection.json",
                "distill.json",
                "verify.json",
            )
        },
        "provenance": provenance(cfg.train.seed),
        "warnings": warnings,
    }


DOWNSTREAM_OF_DISTILL = (
    "student.pt",
    "distill.json",
    TRAIN_STATE,
    PILOT_RECORD,
    *(checkpoint_path(Path(), recipe).name for recipe in RECIPES),
    "student.onnx",
    "export.json",
    "verify.json",
    "int8.json",
    "student.int8.onnx",
    "report.json",
    "report.md",
    "report.html",
)


def distill_stage_only(cfg: RunConfig, log: Log = lambda _msg: None) -> DistillResult | None:
    """Re-run only distillation in an existing run folder, from its run.json and selection.json.

    Artifacts that depend on the student are removed first, so the folder never mixes a new
    student with an old export or report; ``compressor export`` and ``verify`` (or
    ``run --resume``) produce them again. Under torchrun every rank trains its shard and rank 0
    alone changes the folder; rank 0 returns the result and the others None.
    """
    distributed.init_distributed(cfg.train.device)
    try:
        main = distributed.info().is_main
        result = _distill_only(cfg, log if main else lambda _msg: None)
        return result if main else None
    finally:
        distributed.shutdown()


def _distill_only(cfg: RunConfig, log: Log) -> DistillResult:
    out = cfg.out
    if not (out / "selection.json").is_file():
        raise CompressorError(f"{out} has no selection.json: run `compressor run` first")
    profile = load_profile(cfg.profile)
    teacher = _load_bundle(cfg, profile)
    data = _load_data(cfg, profile, resolve_run_preprocess(cfg, profile, teacher), log)
    check_compatibility(teacher, profile, data)
    selection = Selection.from_dict(read_json(out / "selection.json"))
    cfg = replace(cfg, resume=False)

    def clear_downstream() -> None:
        for name in DOWNSTREAM_OF_DISTILL:
            (out / name).unlink(missing_ok=True)
        marker = {"compressor": __version__, "config": _config_dict(cfg)}
        write_json_atomic(out / RUN_MARKER, marker)

    _on_main(clear_downstream)  # rank 0 writes; the others wait until it has
    return _distill_stage(cfg, profile, teacher, data, selection, [], log)
