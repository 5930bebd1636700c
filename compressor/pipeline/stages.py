"""The stage contract and the stages of ``compressor run``, in order.

A stage has a name, declares the artifacts it writes, runs from a :class:`RunContext` and can
load its result back from a run folder. The pipeline is a loop over :data:`STAGES`;
``--resume`` reuses the leading stages whose records exist, and ``compressor distill`` removes
the artifacts of its stage and of every later one, both derived from the order below.

How to add a stage: subclass :class:`Stage`, give it a ``name``, its ``artifacts`` (and
``records``, the files that mean "done" when they differ), ``run`` and, when it can be
reused on ``--resume``, ``load``; put an instance in :data:`STAGES` where it belongs. Later
stages read its result as ``ctx.results.<name>``, a field of
:class:`~compressor.pipeline.results.StageResults` (add one for a new stage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from compressor.config.run import config_dict
from compressor.data.splits import normalize
from compressor.errors import CompressorError
from compressor.export.int8 import decide_int8, quantize_int8, shipped_graph
from compressor.export.to_onnx import ExportResult, onnx_bytes
from compressor.export.verify import verify_onnx
from compressor.files import read_json, write_json_atomic
from compressor.latency.cpu import channel_block
from compressor.latency.paired import measure_paired
from compressor.latency.timing import TimingSettings
from compressor.models.checkpoint import load_bundle
from compressor.models.pretrained import is_torchvision_init, torchvision_weights
from compressor.models.pruning import plan_student_source, prepare_derived
from compressor.models.registry import count_flops, families_to_try, get_family
from compressor.pipeline.context import RunContext
from compressor.pipeline.distill_stage import DistillStage, initial_student, save_derived
from compressor.pipeline.report_builder import build_report
from compressor.pipeline.results import Int8Result, SpeedupResult, required
from compressor.pipeline.single_stage import export_bundle
from compressor.pipeline.stage import Stage
from compressor.progress import Progress
from compressor.report.writer import write_report
from compressor.run_folder import RunFolder
from compressor.selection.memory import default_memory_path
from compressor.selection.sources import choose_student
from compressor.selection.table import Candidate, Selection


class SelectStage(Stage):
    """Time the student ladder and choose; the run folder is created only after this succeeds."""

    name = "select"

    def artifacts(self, folder: RunFolder) -> list[Path]:
        return [folder.selection, folder.derived_student]

    def records(self, folder: RunFolder) -> list[Path]:
        return [folder.selection]

    def run(self, ctx: RunContext) -> Selection:
        cfg, profile, teacher, log = ctx.cfg, ctx.profile, ctx.teacher, ctx.log
        input_hw = (profile.input_shape[1], profile.input_shape[2])
        families = families_to_try(cfg.family, bool(cfg.candidates), teacher.arch, input_hw)
        plan = plan_student_source(
            cfg.student_source, teacher, profile.input_shape, student_init=cfg.student_init,
            ladder_named=bool(cfg.family or cfg.candidates), round_to=channel_block(),
        )  # fmt: skip
        budget = f"{profile.latency_ms:g} ms at p{profile.percentile:g}"
        kinds = ["derived"] * (plan.trajectory is not None) + [" / ".join(families)] * (
            plan.fresh_allowed
        )
        log(f"selecting a {' or '.join(kinds)} student for {budget}")
        ladder = len(cfg.candidates or get_family(families[0]).ladder) * plan.fresh_allowed
        on_candidate = _candidate_progress(ctx, ladder + (plan.trajectory is not None) * 5)
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
            plan=plan,
            keep=published_weights_only(cfg.student_init, log),
            memory_path=default_memory_path() if cfg.selection_memory else None,
        )
        log(f"chosen: {chosen.chosen}")
        point = None
        if chosen.student_source == "pruned":
            point = plan.trajectory.point(chosen.chosen)
            chosen.derived = prepare_derived(
                point, ctx.data.train, ctx.data.val, teacher.mean, teacher.std, cfg.train.seed
            )
            before = chosen.derived["val_top1_before_training"]
            log(f"derived student after BatchNorm recalibration, before training: val top-1 "
                f"{before:.4f}")  # fmt: skip
        else:
            # bad --student-init weights end the run here, before anything is written
            initial_student(cfg, chosen, teacher, ctx.folder, lambda _m: None)
        if not cfg.resume:
            ctx.folder.prepare(cfg.overwrite)
            ctx.folder.write_marker(config_dict(cfg))
        if point is not None:
            save_derived(ctx, point.model, point.record())
        write_json_atomic(ctx.folder.selection, chosen.to_dict())
        return chosen

    def load(self, ctx: RunContext) -> Selection:
        selection = Selection.from_dict(read_json(ctx.folder.selection))
        ctx.log(f"resume: selection done before, student {selection.chosen}")
        return selection


def published_weights_only(student_init: Path | None, log: Any) -> Any:
    """``--student-init torchvision``: only ladder archs torchvision publishes weights for."""
    if not is_torchvision_init(student_init):
        return None
    log("--student-init torchvision: only candidates with published torchvision weights")
    return lambda name: torchvision_weights(name) is not None


def _candidate_progress(ctx: RunContext, total: int) -> Any:
    """A progress line per timed candidate: its latency, whether it fits, its speedup."""
    progress, timed = Progress(ctx.log), [0]
    percentile = ctx.profile.percentile
    progress.start("timing candidates")

    def on_candidate(c: Candidate) -> None:
        timed[0] += 1
        ms = c.predicted_ms if c.predicted_ms is not None else c.at_percentile_ms
        detail = f"{c.name} p{percentile:g} {ms:.3f} ms ({c.precision}), fits={c.fits}"
        if c.speedup is not None:
            detail += f", {c.speedup:.2f}x faster than the teacher"
        # the search's count is an estimate: never show more done than planned
        progress.tick("timing candidates", timed[0], max(total, timed[0]), detail)

    return on_candidate


class ExportStage(Stage):
    """student.pt -> student.onnx with the metadata a deployment needs."""

    name = "export"

    def artifacts(self, folder: RunFolder) -> list[Path]:
        return [folder.onnx, folder.export_record]

    def run(self, ctx: RunContext) -> ExportResult:
        ctx.log("exporting student.onnx")
        bundle = load_bundle(ctx.folder.student_bundle)
        exported = export_bundle(bundle, ctx.profile.input_shape, ctx.folder.onnx, ctx.profile)
        write_json_atomic(ctx.folder.export_record, exported.to_dict())
        return exported

    def load(self, ctx: RunContext) -> ExportResult:
        try:
            return ExportResult.from_dict(read_json(ctx.folder.export_record))
        except (KeyError, TypeError, ValueError) as exc:
            raise ctx.folder.damaged(exc) from exc


class VerifyStage(Stage):
    """Accuracy, parity with the PyTorch student, latency and gates, with onnxruntime on CPU."""

    name = "verify"
    resumable = False

    def artifacts(self, folder: RunFolder) -> list[Path]:
        return [folder.verify_record]

    def run(self, ctx: RunContext) -> Any:
        ctx.log("verifying with onnxruntime on CPU")
        student = required(ctx.results.distill, "distill").student
        selection = required(ctx.results.select, "select")
        student_mflops = count_flops(student, ctx.profile.input_shape) / 1e6
        verified = verify_onnx(
            ctx.folder.onnx,
            ctx.data.test,
            ctx.teacher.mean,
            ctx.teacher.std,
            ctx.profile,
            reference=student,
            teacher=ctx.teacher.model.cpu(),
            predict_target=lambda ms: selection.predict(ms, student_mflops),
        )
        write_json_atomic(ctx.folder.verify_record, verified.to_dict())
        return verified


class Int8Stage(Stage):
    """int8 profiles: quantize, verify, and keep int8 only if it proves better (else None)."""

    name = "int8"
    resumable = False
    calibration_images = 300

    def artifacts(self, folder: RunFolder) -> list[Path]:
        return [folder.int8_record, folder.int8_onnx]

    def run(self, ctx: RunContext) -> Int8Result | None:
        if ctx.profile.quantization != "int8":
            return None
        folder, profile, teacher, log = ctx.folder, ctx.profile, ctx.teacher, ctx.log
        seed = torch.Generator().manual_seed(ctx.cfg.train.seed)
        pick = torch.randperm(len(ctx.data.train), generator=seed)[: self.calibration_images]
        calibration = normalize(ctx.data.train.read(pick), teacher.mean, teacher.std).numpy()
        log(f"int8: calibrating on {len(calibration)} training images")
        quant = quantize_int8(folder.onnx, folder.int8_onnx, calibration)
        int8_verified = verify_onnx(
            folder.int8_onnx, ctx.data.test, teacher.mean, teacher.std, profile,
            teacher=teacher.model.cpu(),
        )  # fmt: skip
        log("int8: timing fp32 and int8 interleaved for the keep-or-drop decision")
        settings = TimingSettings.from_profile(profile)
        paired = measure_paired(
            folder.onnx, folder.int8_onnx, profile.input_shape, settings, profile.percentile,
            threshold=1.0,
        )  # fmt: skip
        fp32 = required(ctx.results.verify, "verify")
        decision = decide_int8(fp32, int8_verified, profile.max_top1_drop, paired=paired)
        log(f"int8: {decision.reason}")
        if not decision.use_int8:
            folder.int8_onnx.unlink()
        result = Int8Result(
            quantize=quant.to_dict(),
            verify=int8_verified.to_dict(),
            decision=decision.to_dict(),
            paired_latency=paired.to_dict(),
        )
        write_json_atomic(folder.int8_record, result.to_dict())
        return result


def shipped_model(ctx: RunContext) -> Path:
    return ctx.folder.int8_onnx if ctx.results.ships_int8 else ctx.folder.onnx


class SpeedupStage(Stage):
    """Teacher and shipped student timed interleaved under the profile's settings.

    Selection required ``min_speedup`` from untrained candidates; this is the number the report
    quotes for the shipped model, with its confidence interval and the CPU the timing got.
    """

    name = "speedup"
    resumable = False

    def run(self, ctx: RunContext) -> SpeedupResult:
        profile, log = ctx.profile, ctx.log
        try:
            graph = onnx_bytes(ctx.teacher.model, profile.input_shape, profile.opset)
        except CompressorError as exc:
            log(f"warning: the teacher could not be exported for timing ({exc}); no speedup "
                "measured")  # fmt: skip
            return SpeedupResult(measured=False, note=str(exc))
        log("timing the teacher and the shipped student interleaved (measured speedup)")
        paired = measure_paired(
            graph, shipped_model(ctx), profile.input_shape, TimingSettings.from_profile(profile),
            profile.percentile, threshold=1.0,
        )  # fmt: skip
        return SpeedupResult(
            measured=True,
            method=(
                f"both sessions open, {paired.rounds} interleaved rounds (order flipped each "
                "round); speedup = median of per-round ratios, order-statistic interval"
            ),
            percentile=profile.percentile,
            teacher_ms=paired.reference.at_percentile_ms,
            student_ms=paired.candidate.at_percentile_ms,
            speedup=paired.ratio,
            ci_low=paired.ci_low,
            ci_high=paired.ci_high,
            coverage=paired.coverage,
            rounds=paired.rounds,
            verdict=paired.verdict(1.0),
            contended=paired.contended,
            cpu=paired.cpu.to_dict(),
            min_speedup=profile.min_speedup,
            teacher=paired.reference.to_dict(),
            student=paired.candidate.to_dict(),
        )


class ReportStage(Stage):
    """report.json, report.md and report.html from one typed report."""

    name = "report"
    resumable = False

    def artifacts(self, folder: RunFolder) -> list[Path]:
        return [folder.report_json, folder.report_md, folder.report_html]

    def run(self, ctx: RunContext) -> Any:
        report = build_report(ctx, shipped_model(ctx))
        write_report(ctx.folder.root, report.to_dict())
        return report


STAGES: tuple[Stage, ...] = (
    SelectStage(),
    DistillStage(),
    ExportStage(),
    VerifyStage(),
    Int8Stage(),
    SpeedupStage(),
    ReportStage(),
)


def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(name)


def downstream_artifacts(name: str, folder: RunFolder) -> list[Path]:
    """The artifacts of stage ``name`` and of every stage after it."""
    index = STAGES.index(stage_named(name))
    return [path for stage in STAGES[index:] for path in stage.artifacts(folder)]


def upstream_stages(name: str) -> tuple[Stage, ...]:
    return STAGES[: STAGES.index(stage_named(name))]
