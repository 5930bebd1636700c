"""``report.md`` from report.json's dict (schema in docs/report.md), and the verdict words every
text rendering shares (:func:`gate_status`, :func:`run_verdict`, :func:`speedup_summary`).

This module only arranges numbers other stages measured; it computes nothing.
"""

from __future__ import annotations

from typing import Any

from compressor.errors import EXIT_INCONCLUSIVE
from compressor.report.formatting import (
    milliseconds,
    number,
    percent,
    recipe_decision,
    step_summary,
    yes_no,
)


def percent_or_na(value: float | None) -> str:
    return "n/a" if value is None else percent(value)


def ms_or_na(value: float | None) -> str:
    return "n/a" if value is None else milliseconds(value)


def _number(value: float | None) -> str:
    return "-" if value is None else number(value)


def _heading(title: str) -> list[str]:
    """A second-level heading with the blank lines around it."""
    return ["", f"## {title}", ""]


def gate_status(gate: dict[str, Any]) -> str:
    """ "pass", "FAIL" or "INCONCLUSIVE" (a contended host or noise left it undecided)."""
    if gate["passed"]:
        return "pass"
    return "INCONCLUSIVE" if gate.get("inconclusive") else "FAIL"


def run_verdict(result: dict[str, Any]) -> str:
    """PASS, FAIL, or INCONCLUSIVE (exit code 3) for a report or a verify result."""
    if result["passed"]:
        return "PASS"
    return "INCONCLUSIVE" if result.get("exit_code") == EXIT_INCONCLUSIVE else "FAIL"


def gate_rows(gates: list[dict[str, Any]]) -> list[str]:
    """The gates as a table, one row each; FAIL in capitals so it stands out."""
    rows = ["| gate | result | detail |", "| --- | --- | --- |"]
    return rows + [f"| {gate['name']} | {gate_status(gate)} | {gate['detail']} |" for gate in gates]


def _preprocess_line(report: dict[str, Any]) -> str:
    spec = report["data"].get("preprocess")
    return spec["description"] if spec else "not recorded (report from an older version)"


def speedup_summary(report: dict[str, Any]) -> str:
    """Measured speedup of the shipped model and the parameter ratio; < 1 is said, not hidden."""
    speedup, ratio = report.get("speedup") or {}, report["size"]["param_ratio"]
    if speedup.get("measured"):
        text = (
            f"{speedup['speedup']:.2f}x faster than the teacher at p{speedup['percentile']:g} "
            f"({ms_or_na(speedup['student_ms'])} vs {ms_or_na(speedup['teacher_ms'])}, measured in "
            "alternation)"
        )
        if speedup["speedup"] < 1:
            text += " - the student is SLOWER than its teacher"
    else:
        text = f"speedup not measured: {speedup.get('note', 'the teacher was not timed')}"
    text += f"; {ratio:.1f}x fewer parameters"
    return text + (" (the student has MORE parameters)" if ratio < 1 else "")


def _init_line(init: dict[str, Any] | None) -> str:
    if not init:
        return "random (from scratch)"
    head = ", classifier re-initialised" if init.get("reinitialised") else ""
    return f"`{init['path']}` ({init['loaded_tensors']} tensors loaded{head})"


def render_markdown(report: dict[str, Any]) -> str:
    """A human-readable summary of a run report (suitable for a pull-request comment)."""
    sections = (
        _summary_md,
        _gates_md,
        _accuracy_md,
        _parity_md,
        _latency_md,
        _size_md,
        _selection_md,
        _distillation_md,
        _bias_md,
        _provenance_md,
        _warnings_md,
    )
    return "\n".join(line for section in sections for line in section(report)) + "\n"


def _summary_md(report: dict[str, Any]) -> list[str]:
    profile, selection = report["profile"], report["selection"]
    verdict = run_verdict(report)
    return [
        f"# compressor report: {verdict}",
        "",
        f"Teacher `{report['teacher']['arch']}` -> student `{selection['chosen']}` "
        f"for profile `{profile['name']}` ({profile['description']}).",
        "",
        f"Preprocessing (the teacher's eval transform, used for every number below and recorded "
        f"in the ONNX metadata): {_preprocess_line(report)}",
    ]


def _gates_md(report: dict[str, Any]) -> list[str]:
    return _heading("Gates") + gate_rows(report["gates"])


def _accuracy_md(report: dict[str, Any]) -> list[str]:
    accuracy, profile = report["accuracy"], report["profile"]
    return [
        *_heading("Accuracy (same test images for both models)"),
        f"- test images: {accuracy['images']} ({report['data']['test_source']})",
        f"- teacher top-1: {percent_or_na(accuracy['teacher_top1'])}",
        f"- student top-1 (onnxruntime): {percent_or_na(accuracy['student_top1'])}",
        f"- student top-5: {percent_or_na(accuracy['student_top5'])}",
        f"- drop: {percent_or_na(accuracy['top1_drop'])} "
        f"(gate: at most {percent_or_na(profile['max_top1_drop'])})",
    ]


def _parity_md(report: dict[str, Any]) -> list[str]:
    lines = _heading("Parity (ONNX vs PyTorch student, on the test images)")
    parity = report["parity"]
    if parity:
        lines += [
            f"- top-1 agreement: {percent_or_na(parity['top1_agreement'])}",
            f"- max |logit diff|: {parity['max_abs_logit_diff']:.3g}, "
            f"mean: {parity['mean_abs_logit_diff']:.3g}",
        ]
    return lines


def _latency_md(report: dict[str, Any]) -> list[str]:
    latency, profile = report["latency"], report["profile"]
    percentile = f"p{profile['percentile']:g}"
    repeats = latency["repeats_at_percentile_ms"]
    predicted = latency["predicted_target_ms"]
    on_target = (
        f" on this host, predicted {ms_or_na(predicted)} on {report['selection']['calibrated_for']}"
        if predicted is not None
        else ""
    )
    setup = f"batch {latency['batch_size']}, {latency['intra_op_threads']} intra-op thread(s)"
    return [
        *_heading(f"Latency (onnxruntime CPU, {setup})"),
        f"- p50 {ms_or_na(latency['p50_ms'])}, p90 {ms_or_na(latency['p90_ms'])}, "
        f"p99 {ms_or_na(latency['p99_ms'])} over {latency['iterations']} runs; "
        f"cold start {ms_or_na(latency['cold_start_ms'])}",
        f"- repeated {len(repeats)} times with fresh sessions: {percentile} = "
        + ", ".join(f"{ms:.3f}" for ms in repeats)
        + f" ms (spread {100 * latency['spread']:.1f}%)",
        f"- budget: {profile['latency_ms']:g} ms at {percentile} "
        f"(measured {ms_or_na(latency['at_percentile_ms'])}{on_target}; "
        f"{100 * latency['budget_utilisation']:.0f}% of the budget used)",
    ]


def _size_md(report: dict[str, Any]) -> list[str]:
    size = report["size"]
    return [
        *_heading("Size and speed against the teacher"),
        f"- {speedup_summary(report)}",
        f"- teacher: {size['teacher_params']:,} params, {size['teacher_mflops']:.1f} MFLOPs",
        f"- student: {size['student_params']:,} params, {size['student_mflops']:.1f} MFLOPs "
        f"({size['param_ratio']:.1f}x fewer params), ONNX {size['onnx_bytes'] / 1024:.0f} KiB",
    ]


def _speed_margin(selection: dict[str, Any]) -> str:
    """How the speedup bar was applied (records before the margin have no target_speedup)."""
    target = selection.get("target_speedup")
    if target is None:
        return ""
    return f" (its interval above that, its median at least {target:.3g}x: the safety margin)"


def _selection_md(report: dict[str, Any]) -> list[str]:
    selection = report["selection"]
    lines = [
        *_heading("Student selection"),
        f"Family `{selection['family']}`, target {selection['target_ms']:.3f} ms at "
        f"p{selection['percentile']:g} (budget {selection['budget_ms']:g} ms less the safety "
        f"margin); a candidate must also be {selection.get('min_speedup', 1.0):g}x faster than "
        f"the teacher{_speed_margin(selection)}. Timed at "
        f"{selection.get('precision', 'fp32')} (the precision that ships).",
        *source_lines(selection),
        "",
        "| candidate | params | MFLOPs | host p50 ms | host p90 ms | predicted target ms | "
        "speedup vs teacher | fits | qualifies |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    teacher = selection.get("teacher")
    if teacher:
        lines.append(
            f"| teacher `{teacher['arch']}` (fp32) | {teacher['params']:,} | "
            f"{teacher['mflops']:.1f} | {_number(teacher['p50_ms'])} | "
            f"{_number(teacher['p90_ms'])} | - | 1.00x | "
            f"{yes_no(teacher['meets_budget'])} | - |"
        )
    return lines + [_candidate_row(one, selection["chosen"]) for one in selection["candidates"]]


def source_lines(selection: dict[str, Any]) -> list[str]:
    """The student source (pruned from the teacher, or a fresh ladder architecture) and why."""
    if not selection.get("source_reason"):
        return []
    lines = [
        "",
        f"Student source: **{selection.get('student_source', 'fresh')}** "
        f"({selection['source_reason']}).",
    ]
    derived = selection.get("derived")
    if derived:
        lines.append(
            f"Derived student: {derived['description']}, {derived['params']:,} params; "
            f"BatchNorm recomputed on {derived['bn_recalibration_images']} training images, "
            f"then validation top-1 {percent_or_na(derived['val_top1_before_training'])} before "
            "any training."
        )
    return lines


def _candidate_row(candidate: dict[str, Any], chosen: str) -> str:
    """A candidate's row; the chosen one in bold, "not timed" when it was never timed."""
    timed = candidate["fits"] is not None
    fits = yes_no(candidate["fits"]) if timed else "not timed"
    qualifies = yes_no(candidate.get("qualifies")) if timed else "-"
    speedup = "-" if candidate.get("speedup") is None else f"{candidate['speedup']:.2f}x"
    name = f"**{candidate['name']}**" if candidate["name"] == chosen else candidate["name"]
    return (
        f"| {name} | {candidate['params']:,} | {candidate['mflops']:.1f} | "
        f"{_number(candidate['p50_ms'])} | {_number(candidate['p90_ms'])} | "
        f"{_number(candidate['predicted_ms'])} | {speedup} | {fits} | {qualifies} |"
    )


def _distillation_md(report: dict[str, Any]) -> list[str]:
    distillation = report["distillation"]
    loss = distillation["loss"]
    lines = [
        *_heading("Distillation"),
        f"- method `{loss['method']}`, bias-aware {loss['bias_aware']}, rectification "
        f"`{loss['rectification']}`, weighting `{loss.get('bias_weighting', 'subset')}`, "
        f"schedule `{loss['schedule']}`, lambda {loss['ce_weight']}, "
        f"T {loss['temperature']}",
        f"- {distillation['train']['epochs']} epochs on {distillation['device']} "
        f"({step_summary(distillation)}) in {distillation['seconds']:.1f} s; "
        f"best validation epoch {distillation['best_epoch']} "
        f"(val top-1 {percent_or_na(distillation['best_val_top1'])}, "
        f"teacher {percent_or_na(distillation['teacher_val_top1'])})",
        f"- student initialisation: {_init_line(distillation.get('student_init'))}",
        *_recipe_lines(distillation.get("recipe_choice")),
        "",
        "| epoch | loss | val top-1 | b(e) | teacher wrong |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in distillation["history"]:
        bias_weight = row.get("b")
        lines.append(
            f"| {row['epoch']} | {row['loss']:.4f} | {percent_or_na(row['val_top1'])} | "
            f"{'-' if bias_weight is None else f'{bias_weight:.3f}'} | "
            f"{percent_or_na(row['teacher_wrong_fraction'])} |"
        )
    return lines


def _recipe_lines(choice: dict[str, Any] | None) -> list[str]:
    """``--method auto``: the pilot table and the winner (empty without auto)."""
    if not choice:
        return []
    lines = [
        f"- recipe chosen on the validation split: `{choice['winner']}` (pilots of "
        f"{choice['pilot_epochs']} of {choice['total_epochs']} epochs, "
        f"{choice['pilot_seconds']:.0f} s in all; the winner's pilot was continued)",
        f"- {recipe_decision(choice)}",
        "",
        "| recipe | pilot val top-1 | pilot time (s) | |",
        "| --- | ---: | ---: | --- |",
    ]
    for pilot in choice["pilots"]:
        won = "chosen" if pilot["recipe"] == choice["winner"] else ""
        lines.append(
            f"| {pilot['recipe']} | {percent_or_na(pilot['val_top1'])} | {pilot['seconds']:.0f} | "
            f"{won} |"
        )
    return lines


def _bias_md(report: dict[str, Any]) -> list[str]:
    bias = report["bias"]
    lines = [
        *_heading("Teacher bias"),
        "Teacher error on the (un-augmented) training split: "
        f"{percent_or_na(bias['teacher_train_error'])}.",
        "",
        "| class | teacher train error |",
        "| --- | ---: |",
    ]
    per_class = bias["teacher_train_error_per_class"]
    return lines + [f"| {name} | {percent_or_na(error)} |" for name, error in per_class.items()]


def _provenance_md(report: dict[str, Any]) -> list[str]:
    provenance = report["provenance"]
    hardware = provenance["hardware"]
    return [
        *_heading("Provenance"),
        f"- teacher sha256 `{report['teacher']['sha256']}`",
        f"- seed {provenance['seed']}, created {provenance['created_utc']}",
        "- versions: "
        + ", ".join(f"{name} {version}" for name, version in provenance["versions"].items()),
        f"- hardware: {hardware['cpu']} ({hardware['cpu_count']} CPUs)",
    ]


def _warnings_md(report: dict[str, Any]) -> list[str]:
    warnings = report.get("warnings")
    if not warnings:
        return []
    return _heading("Warnings") + [f"- {text}" for text in warnings]
