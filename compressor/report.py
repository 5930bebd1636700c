"""Run reports: ``report.json`` (versioned schema, documented in docs/report.md) and ``report.md``.

This module only arranges numbers other stages measured; it computes nothing.
"""

from __future__ import annotations

import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from compressor import __version__
from compressor.formatting import step_summary
from compressor.io import write_json_atomic, write_text_atomic
from compressor.report_html import render_html

SCHEMA_VERSION = 1


def versions() -> dict[str, str]:
    """Versions of Python, the package and the libraries whose behaviour the numbers depend on."""
    out = {"python": sys.version.split()[0], "compressor": __version__}
    for pkg in ("torch", "torchvision", "onnx", "onnxruntime", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def hardware() -> dict[str, Any]:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def provenance(seed: int, command: list[str] | None = None) -> dict[str, Any]:
    return {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else sys.argv,
        "seed": seed,
        "versions": versions(),
        "hardware": hardware(),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} ms"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _preprocess_line(report: dict[str, Any]) -> str:
    spec = report["data"].get("preprocess")
    return spec["description"] if spec else "not recorded (report from an older version)"


def speedup_summary(report: dict[str, Any]) -> str:
    """Measured speedup of the shipped model and the parameter ratio; < 1 is said, not hidden."""
    speed, ratio = report.get("speedup") or {}, report["size"]["param_ratio"]
    if speed.get("measured"):
        text = (
            f"{speed['speedup']:.2f}x faster than the teacher at p{speed['percentile']:g} "
            f"({_ms(speed['student_ms'])} vs {_ms(speed['teacher_ms'])}, measured in alternation)"
        )
        if speed["speedup"] < 1:
            text += " - the student is SLOWER than its teacher"
    else:
        text = f"speedup not measured: {speed.get('note', 'the teacher was not timed')}"
    text += f"; {ratio:.1f}x fewer parameters"
    return text + (" (the student has MORE parameters)" if ratio < 1 else "")


def _init_line(init: dict[str, Any] | None) -> str:
    if not init:
        return "random (from scratch)"
    head = ", classifier re-initialised" if init.get("reinitialised") else ""
    return f"`{init['path']}` ({init['loaded_tensors']} tensors loaded{head})"


def render_markdown(report: dict[str, Any]) -> str:
    """A human-readable summary of a run report (suitable for a pull-request comment)."""
    acc, lat, size = report["accuracy"], report["latency"], report["size"]
    sel, dist, bias = report["selection"], report["distillation"], report["bias"]
    profile = report["profile"]
    verdict = "PASS" if report["passed"] else "FAIL"
    lines = [
        f"# compressor report: {verdict}",
        "",
        f"Teacher `{report['teacher']['arch']}` -> student `{sel['chosen']}` "
        f"for profile `{profile['name']}` ({profile['description']}).",
        "",
        f"Preprocessing (the teacher's eval transform, used for every number below and recorded "
        f"in the ONNX metadata): {_preprocess_line(report)}",
        "",
        "## Gates",
        "",
        "| gate | result | detail |",
        "| --- | --- | --- |",
    ]
    for gate in report["gates"]:
        lines.append(
            f"| {gate['name']} | {'pass' if gate['passed'] else 'FAIL'} | {gate['detail']} |"
        )
    lines += [
        "",
        "## Accuracy (same test images for both models)",
        "",
        f"- test images: {acc['images']} ({report['data']['test_source']})",
        f"- teacher top-1: {_pct(acc['teacher_top1'])}",
        f"- student top-1 (onnxruntime): {_pct(acc['student_top1'])}",
        f"- student top-5: {_pct(acc['student_top5'])}",
        f"- drop: {_pct(acc['top1_drop'])} (gate: at most {_pct(profile['max_top1_drop'])})",
        "",
        "## Parity (ONNX vs PyTorch student, on the test images)",
        "",
    ]
    parity = report["parity"]
    if parity:
        lines += [
            f"- top-1 agreement: {_pct(parity['top1_agreement'])}",
            f"- max |logit diff|: {parity['max_abs_logit_diff']:.3g}, "
            f"mean: {parity['mean_abs_logit_diff']:.3g}",
        ]
    lines += [
        "",
        f"## Latency (onnxruntime CPU, batch {lat['batch_size']}, {lat['intra_op_threads']} "
        "intra-op thread(s))",
        "",
        f"- p50 {_ms(lat['p50_ms'])}, p90 {_ms(lat['p90_ms'])}, p99 {_ms(lat['p99_ms'])} "
        f"over {lat['iterations']} runs; cold start {_ms(lat['cold_start_ms'])}",
        f"- repeated {len(lat['repeats_at_percentile_ms'])} times with fresh sessions: "
        f"p{profile['percentile']:g} = "
        + ", ".join(f"{v:.3f}" for v in lat["repeats_at_percentile_ms"])
        + f" ms (spread {100 * lat['spread']:.1f}%)",
        f"- budget: {profile['latency_ms']:g} ms at p{profile['percentile']:g} "
        f"(measured {_ms(lat['at_percentile_ms'])}"
        + (
            f" on this host, predicted {_ms(lat['predicted_target_ms'])} on {sel['calibrated_for']}"
            if lat["predicted_target_ms"] is not None
            else ""
        )
        + f"; {100 * lat['budget_utilisation']:.0f}% of the budget used)",
        "",
        "## Size and speed against the teacher",
        "",
        f"- {speedup_summary(report)}",
        f"- teacher: {size['teacher_params']:,} params, {size['teacher_mflops']:.1f} MFLOPs",
        f"- student: {size['student_params']:,} params, {size['student_mflops']:.1f} MFLOPs "
        f"({size['param_ratio']:.1f}x fewer params), ONNX {size['onnx_bytes'] / 1024:.0f} KiB",
        "",
        "## Student selection",
        "",
        f"Family `{sel['family']}`, target {sel['target_ms']:.3f} ms at p{sel['percentile']:g} "
        f"(budget {sel['budget_ms']:g} ms less the safety margin); a candidate must also be "
        f"{sel.get('min_speedup', 1.0):g}x faster than the teacher. Timed at "
        f"{sel.get('precision', 'fp32')} (the precision that ships).",
        "",
        "| candidate | params | MFLOPs | host p50 ms | host p90 ms | predicted target ms | "
        "speedup vs teacher | fits | qualifies |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    teacher_row = sel.get("teacher")
    if teacher_row:
        lines.append(
            f"| teacher `{teacher_row['arch']}` (fp32) | {teacher_row['params']:,} | "
            f"{teacher_row['mflops']:.1f} | {_num(teacher_row['p50_ms'])} | "
            f"{_num(teacher_row['p90_ms'])} | - | 1.00x | "
            f"{_yes(teacher_row['meets_budget'])} | - |"
        )

    for c in sel["candidates"]:
        fits = "not timed" if c["fits"] is None else _yes(c["fits"])
        qualifies = "-" if c["fits"] is None else _yes(c.get("qualifies"))
        speedup = "-" if c.get("speedup") is None else f"{c['speedup']:.2f}x"
        name = f"**{c['name']}**" if c["name"] == sel["chosen"] else c["name"]
        lines.append(
            f"| {name} | {c['params']:,} | {c['mflops']:.1f} | {_num(c['p50_ms'])} | "
            f"{_num(c['p90_ms'])} | {_num(c['predicted_ms'])} | {speedup} | {fits} | "
            f"{qualifies} |"
        )
    loss = dist["loss"]
    lines += [
        "",
        "## Distillation",
        "",
        f"- method `{loss['method']}`, bias-aware {loss['bias_aware']}, rectification "
        f"`{loss['rectification']}`, schedule `{loss['schedule']}`, lambda {loss['ce_weight']}, "
        f"T {loss['temperature']}",
        f"- {dist['train']['epochs']} epochs on {dist['device']} ({step_summary(dist)}) in "
        f"{dist['seconds']:.1f} s; "
        f"best validation epoch {dist['best_epoch']} (val top-1 {_pct(dist['best_val_top1'])}, "
        f"teacher {_pct(dist['teacher_val_top1'])})",
        f"- student initialisation: {_init_line(dist.get('student_init'))}",
        *_recipe_lines(dist.get("recipe_choice")),
        "",
        "| epoch | loss | val top-1 | b(e) | teacher wrong |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in dist["history"]:
        b = row.get("b")
        lines.append(
            f"| {row['epoch']} | {row['loss']:.4f} | {_pct(row['val_top1'])} | "
            f"{'-' if b is None else f'{b:.3f}'} | {_pct(row['teacher_wrong_fraction'])} |"
        )
    lines += [
        "",
        "## Teacher bias",
        "",
        f"Teacher error on the (un-augmented) training split: {_pct(bias['teacher_train_error'])}.",
        "",
        "| class | teacher train error |",
        "| --- | ---: |",
    ]
    for name, err in bias["teacher_train_error_per_class"].items():
        lines.append(f"| {name} | {_pct(err)} |")
    prov = report["provenance"]
    lines += [
        "",
        "## Provenance",
        "",
        f"- teacher sha256 `{report['teacher']['sha256']}`",
        f"- seed {prov['seed']}, created {prov['created_utc']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items()),
        f"- hardware: {prov['hardware']['cpu']} ({prov['hardware']['cpu_count']} CPUs)",
    ]
    if report.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict[str, Any]) -> tuple[Path, Path, Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` atomically into the run folder."""
    report = {"schema_version": SCHEMA_VERSION, **report}
    return (
        write_json_atomic(out / "report.json", report),
        write_text_atomic(out / "report.md", render_markdown(report)),
        write_text_atomic(out / "report.html", render_html(report)),
    )


def junit_xml(gates: list[dict[str, Any]], suite: str = "compressor.verify") -> str:
    """JUnit XML with one test case per gate, so CI systems show each gate as a test."""
    import xml.etree.ElementTree as ET

    failures = sum(not g["passed"] for g in gates)
    root = ET.Element(
        "testsuites", name="compressor", tests=str(len(gates)), failures=str(failures)
    )
    node = ET.SubElement(
        root, "testsuite", name=suite, tests=str(len(gates)), failures=str(failures), errors="0"
    )
    for gate in gates:
        case = ET.SubElement(node, "testcase", classname=suite, name=gate["name"])
        if not gate["passed"]:
            failure = ET.SubElement(case, "failure", message=gate["detail"], type="GateFailure")
            failure.text = (
                f"{gate['name']}: value {gate['value']:.6g} must be {gate['comparison']} "
                f"{gate['threshold']:.6g}"
            )
        else:
            ET.SubElement(case, "system-out").text = gate["detail"]
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def render_verify_markdown(result: dict[str, Any]) -> str:
    """Summary of a standalone ``compressor verify`` for CI logs and pull requests."""
    lat = result["latency"]
    lines = [
        f"# compressor verify: {'PASS' if result['passed'] else 'FAIL'}",
        "",
        f"Model `{result['model']}` on {result['images']} test images ({result['test_source']}).",
        "",
        "| gate | result | detail |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {g['name']} | {'pass' if g['passed'] else 'FAIL'} | {g['detail']} |"
        for g in result["gates"]
    ]
    lines += [
        "",
        f"- top-1 {_pct(result['student_top1'])}, top-5 {_pct(result['student_top5'])}, "
        f"teacher top-1 {_pct(result['teacher_top1'])}",
        f"- latency p50 {_ms(lat['p50_ms'])}, p90 {_ms(lat['p90_ms'])}, p99 {_ms(lat['p99_ms'])}, "
        f"cold start {_ms(lat['cold_start_ms'])}, spread over repeats "
        f"{100 * result['latency_spread']:.1f}%",
    ]
    if result.get("parity"):
        p = result["parity"]
        lines.append(
            f"- parity: agreement {_pct(p['top1_agreement'])}, max |diff| "
            f"{p['max_abs_logit_diff']:.3g}, mean {p['mean_abs_logit_diff']:.3g}"
        )
    return "\n".join(lines) + "\n"


def _recipe_lines(choice: dict[str, Any] | None) -> list[str]:
    """``--method auto``: the pilot table and the winner (empty without auto)."""
    if not choice:
        return []
    lines = [
        f"- recipe chosen on the validation split: `{choice['winner']}` (pilots of "
        f"{choice['pilot_epochs']} of {choice['total_epochs']} epochs, "
        f"{choice['pilot_seconds']:.0f} s in all; the winner's pilot was continued)",
        "",
        "| recipe | pilot val top-1 | pilot time (s) | |",
        "| --- | ---: | ---: | --- |",
    ]
    for row in choice["pilots"]:
        won = "chosen" if row["recipe"] == choice["winner"] else ""
        lines.append(
            f"| {row['recipe']} | {_pct(row['val_top1'])} | {row['seconds']:.0f} | {won} |"
        )
    return lines
