"""The run's report as one typed object, built once from the stages' results.

:class:`Report` holds report.json's sections (keys documented in docs/report.md); its verdict
(``passed``, ``exit_code``, ``failed_gates``) comes from one function, :func:`verdict`, over the
gates that judge the shipped model. ``to_dict`` gives report.json, which the Markdown and HTML
renderers (:mod:`compressor.report`, :mod:`compressor.report_html`) read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.recipes import recipe_loss
from compressor.report import provenance
from compressor.students import count_flops, count_params
from compressor.verify import VerifyReport, gate_exit_code, make_gate

if TYPE_CHECKING:
    from compressor.distill import DistillResult
    from compressor.run_context import RunContext

Gate = dict[str, Any]


def verdict(gates: list[Gate]) -> tuple[bool, int, list[str]]:
    """``(passed, exit_code, failed gate names)``: a run passes when every gate does; exit code
    1 when a gate failed, 3 when none failed but one was inconclusive (contended host)."""
    failed = [gate["name"] for gate in gates if not gate["passed"] and not gate.get("inconclusive")]
    passed = all(gate["passed"] for gate in gates)
    return passed, gate_exit_code(gates), failed


@dataclass
class Report:
    """report.json as an object; the section order here is report.json's key order."""

    gates: list[Gate]
    teacher: dict[str, Any]
    profile: dict[str, Any]
    data: dict[str, Any]
    selection: dict[str, Any]
    distillation: dict[str, Any]
    bias: dict[str, Any]
    accuracy: dict[str, Any]
    parity: dict[str, Any]
    latency: dict[str, Any]
    size: dict[str, Any]
    export: dict[str, Any]
    artifacts: dict[str, str]
    provenance: dict[str, Any]
    warnings: list[str]
    int8: dict[str, Any] | None
    shipped: dict[str, Any]
    speedup: dict[str, Any]
    resumed: dict[str, Any] | None

    @property
    def passed(self) -> bool:
        return verdict(self.gates)[0]

    @property
    def exit_code(self) -> int:
        return verdict(self.gates)[1]

    def to_dict(self) -> dict[str, Any]:
        passed, exit_code, failed = verdict(self.gates)
        sections = asdict(self)
        gates = sections.pop("gates")
        int8 = sections.pop("int8")
        tail = {key: sections.pop(key) for key in ("shipped", "speedup", "resumed")}
        out = {"passed": passed, "exit_code": exit_code, "failed_gates": failed}
        out["inconclusive_gates"] = [g["name"] for g in gates if g.get("inconclusive")]
        out.update(sections)
        out = _insert_after(out, "latency", "gates", gates)
        if int8 is not None:
            out["int8"] = int8
        out["shipped_model"] = tail["shipped"]["model"]
        return {**out, **tail}


def _insert_after(mapping: dict[str, Any], after: str, key: str, value: Any) -> dict[str, Any]:
    items = list(mapping.items())
    index = [name for name, _ in items].index(after) + 1
    return dict([*items[:index], (key, value), *items[index:]])


def shipped_gates(verified: VerifyReport, int8: dict[str, Any] | None) -> list[Gate]:
    """The gates that judge the shipped model.

    When int8 ships, its own accuracy and latency gates decide, next to the fp32 export's parity
    gates (int8 cannot meet fp32 logit tolerances).
    """
    gates = [asdict(gate) for gate in verified.gates]
    if int8 and int8["decision"]["use_int8"]:
        parity = [gate for gate in gates if gate["name"].startswith("parity_")]
        return parity + [
            {**gate, "name": f"int8_{gate['name']}"} for gate in int8["verify"]["gates"]
        ]
    return gates


def speedup_gates(speedup: dict[str, Any]) -> list[Gate]:
    """A shipped student slower than its teacher fails the run: it compresses nothing.

    Decided by the interleaved ratio's confidence interval: above 1 passes, below 1 fails,
    an interval around 1 (or a contended timing that did not clear 1) is inconclusive.
    """
    if not speedup.get("measured"):
        return []
    gate = asdict(make_gate("faster_than_teacher", speedup["speedup"], 1.0, ">=", "x"))
    verdict_ = speedup.get("verdict")
    if verdict_ is None:  # a record from before paired timing: the point estimate decides
        return [gate]
    interval = f"{speedup['ci_low']:.2f}-{speedup['ci_high']:.2f}"
    if verdict_ == "above":
        gate.update(passed=True, detail=f"{gate['detail'].split(':')[0]}: ok (CI {interval})")
    elif verdict_ == "below" and not speedup.get("contended"):
        gate.update(passed=False, detail=f"{gate['detail']} (CI {interval})")
    else:
        why = "a contended host" if speedup.get("contended") else "noise"
        gate.update(
            passed=False,
            inconclusive=True,
            detail=f"{speedup['speedup']:.3g}x >= 1x: INCONCLUSIVE, within {why} (CI {interval})",
        )
    return [gate]


def int8_decision_gates(int8: dict[str, Any] | None) -> list[Gate]:
    """An int8 keep-or-drop that a contended host left undecided makes the run inconclusive."""
    if not int8 or not int8["decision"].get("inconclusive"):
        return []
    reason = int8["decision"]["reason"]
    return [
        {
            "name": "int8_speed_decision",
            "passed": False,
            "value": float("nan"),
            "threshold": 1.0,
            "comparison": ">=",
            "detail": f"INCONCLUSIVE: {reason}",
            "inconclusive": True,
        }
    ]


def build_report(ctx: RunContext, shipped_model: Path, ships_int8: bool) -> Report:
    """Assemble the report from the context and the stages' results."""
    results = ctx.results
    result: DistillResult = results["distill"]
    verified: VerifyReport = results["verify"]
    int8, speedup = results.get("int8"), results["speedup"]
    latency = _latency_section(verified, ctx.profile.latency_ms)
    shipped_latency = int8["verify"]["latency"] if int8 and ships_int8 else latency
    return Report(
        gates=shipped_gates(verified, int8) + int8_decision_gates(int8) + speedup_gates(speedup),
        teacher=ctx.teacher.describe(),
        profile=ctx.profile.to_dict(),
        data=ctx.data.describe(),
        selection=results["select"].to_dict(),
        distillation=_distillation_section(ctx, result),
        bias=_bias_section(result, ctx.data.class_names),
        accuracy=_accuracy_section(verified),
        parity=verified.parity,
        latency=latency,
        size=_size_section(ctx, result, results["export"]),
        export=results["export"],
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
    if ctx.results["select"].student_source == "pruned":
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


def _size_section(
    ctx: RunContext, result: DistillResult, exported: dict[str, Any]
) -> dict[str, Any]:
    shape = ctx.profile.input_shape
    student_params = count_params(result.student)
    teacher_params = count_params(ctx.teacher.model)
    return {
        "teacher_params": teacher_params,
        "student_params": student_params,
        "param_ratio": teacher_params / max(student_params, 1),
        "teacher_mflops": count_flops(ctx.teacher.model, shape) / 1e6,
        "student_mflops": count_flops(result.student, shape) / 1e6,
        "onnx_bytes": exported["size_bytes"],
    }
