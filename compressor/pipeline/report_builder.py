"""The run's :class:`~compressor.report.model.Report`, assembled once from the stages' results.

The report package renders a report and never sees the run; this module reads the run context
and fills the report's sections.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.export.to_onnx import ExportResult
from compressor.export.verify import VerifyReport
from compressor.models.registry import count_flops, count_params
from compressor.pipeline.results import required
from compressor.report.model import (
    Report,
    int8_decision_gates,
    shipped_gates,
    speedup_gates,
)
from compressor.report.provenance import provenance
from compressor.train.recipes import recipe_loss

if TYPE_CHECKING:
    from compressor.pipeline.context import RunContext
    from compressor.train.loop import DistillResult


def build_report(ctx: RunContext, shipped_model: Path) -> Report:
    """Assemble the report from the context and the stages' results."""
    results = ctx.results
    result = required(results.distill, "distill")
    verified = required(results.verify, "verify")
    exported = required(results.export, "export")
    int8 = results.int8.to_dict() if results.int8 is not None else None
    speedup = required(results.speedup, "speedup").to_dict()
    ships_int8 = results.ships_int8
    latency = _latency_section(verified, ctx.profile.latency_ms)
    shipped_latency = int8["verify"]["latency"] if int8 and ships_int8 else latency
    return Report(
        gates=shipped_gates(verified, int8) + int8_decision_gates(int8) + speedup_gates(speedup),
        teacher=ctx.teacher.describe(),
        profile=ctx.profile.to_dict(),
        data=ctx.data.describe(),
        selection=required(results.select, "select").to_dict(),
        distillation=_distillation_section(ctx, result),
        bias=_bias_section(result, ctx.data.class_names),
        accuracy=_accuracy_section(verified),
        parity=verified.parity,
        latency=latency,
        size=_size_section(ctx, result, exported),
        export=exported.to_dict(),
        artifacts=ctx.folder.listed_artifacts(),
        provenance=provenance(ctx.cfg.train.seed),
        warnings=ctx.warnings,
        int8=int8,
        shipped={
            "model": str(shipped_model),
            "precision": "int8" if ships_int8 else "fp32",
            "latency": shipped_latency,
        },
        speedup=speedup,
        resumed=(
            {"stages_skipped": ctx.reused, "from_epoch": result.resumed_from_epoch}
            if ctx.cfg.resume
            else None
        ),
    )


def _distillation_section(ctx: RunContext, result: DistillResult) -> dict[str, Any]:
    distilled = result.to_dict()
    choice = distilled.get("recipe_choice")
    loss = recipe_loss(choice["winner"], ctx.cfg.loss) if choice else ctx.cfg.loss
    train = asdict(ctx.cfg.train)
    if required(ctx.results.select, "select").student_source == "pruned":
        train["lr"] = ctx.cfg.pruned_lr  # a derived student trains at --pruned-lr
    return {
        "loss": asdict(loss),  # the loss the shipped student trained with
        "train": train,
        "device": distilled["device"],
        "step": distilled["step"],
        "world_size": distilled["world_size"],
        "best_epoch": distilled["best_epoch"],
        "best_val_top1": distilled["best_val_top1"],
        "student_init": distilled.get("student_init"),
        "recipe_choice": choice,
        "teacher_val_top1": distilled["teacher_val_top1"],
        "seconds": distilled["seconds"],
        "history": distilled["history"],
    }


def _bias_section(result: DistillResult, class_names: list[str]) -> dict[str, Any]:
    def per_class(values: list[float]) -> dict[str, float]:
        return dict(zip(class_names, values, strict=True))

    return {
        "teacher_train_error": result.teacher_train_error,
        "teacher_train_error_per_class": per_class(result.teacher_train_error_per_class),
        "teacher_confusion": result.teacher_train_confusion,
        "per_epoch": [
            {
                "epoch": row["epoch"],
                "teacher_wrong_fraction": row["teacher_wrong_fraction"],
                "teacher_wrong_per_class": per_class(row["teacher_wrong_per_class"]),
                "rectified": row["n_rectified"],
                "b": row.get("b"),
            }
            for row in result.history
        ],
    }


def _accuracy_section(verified: VerifyReport) -> dict[str, Any]:
    return {
        "images": verified.images,
        "teacher_top1": verified.teacher_top1,
        "student_top1": verified.student_top1,
        "student_top5": verified.student_top5,
        "top1_drop": verified.top1_drop,
    }


def _latency_section(verified: VerifyReport, budget_ms: float) -> dict[str, Any]:
    judged_ms = verified.predicted_target_ms or verified.latency.at_percentile_ms
    return {
        **verified.latency.to_dict(),
        "repeats_at_percentile_ms": verified.latency_repeats,
        "spread": verified.latency_spread,
        "predicted_target_ms": verified.predicted_target_ms,
        "budget_utilisation": judged_ms / budget_ms,
        "contention": verified.contention,
    }


def _size_section(ctx: RunContext, result: DistillResult, exported: ExportResult) -> dict[str, Any]:
    shape = ctx.profile.input_shape
    student_params = count_params(result.student)
    teacher_params = count_params(ctx.teacher.model)
    return {
        "teacher_params": teacher_params,
        "student_params": student_params,
        "param_ratio": teacher_params / max(student_params, 1),
        "teacher_mflops": count_flops(ctx.teacher.model, shape) / 1e6,
        "student_mflops": count_flops(result.student, shape) / 1e6,
        "onnx_bytes": exported.size_bytes,
    }
