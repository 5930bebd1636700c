"""Self-contained ``report.html``: the content of report.md plus charts, in one file.

Reports are read from CI artefacts and e-mail attachments, often offline, so the page uses only
inline CSS and inline SVG generated here: no scripts, fonts, images or network. Every string
taken from the report is HTML-escaped, and every field is optional so older reports render.
This module is the page and its sections on the run's outcome; the sections on how the student
was made are in report_html_student.py, the building blocks (stylesheet, cells, tables) in
html_blocks.py and the charts in svg_charts.py.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from compressor.report.formatting import escape_html, finite
from compressor.report.html_blocks import (
    CSS,
    MISSING,
    as_dict,
    badge,
    code,
    html_ms,
    html_number,
    html_percent,
    key_value_table,
    lookup,
    section,
    table,
)
from compressor.report.html_student import bias_section, distillation_section, selection_section
from compressor.report.svg_charts import FAIL, PASS


def _header(report: dict[str, Any]) -> str:
    profile = as_dict(report.get("profile"))
    arch = code(lookup(report, "teacher", "arch"))
    chosen = code(lookup(report, "selection", "chosen"))
    description = profile.get("description")
    described = f" ({escape_html(description)})" if description else ""
    verdict = badge(report.get("passed"), word=True, inconclusive=report.get("exit_code") == 3)
    return (
        f'<header id="summary"><h1>compressor report {verdict}</h1><p>Teacher {arch} &rarr; '
        f"student {chosen} for profile {code(profile.get('name'))}{described}.</p></header>"
    )


def _verification(report: dict[str, Any]) -> str:
    """What the verify stage judged (gates, accuracy, parity, latency) beside the limits."""
    body = (
        f'{_gates(report)}<div class="grid"><div>{_accuracy(report)}</div>'
        f"<div>{_parity(report)}</div><div>{_size(report)}{_speedup(report)}</div></div>"
        f"{_latency(report)}"
    )
    return section("verification", "Verification", body)


def _gates(report: dict[str, Any]) -> str:
    gates = [gate for gate in report.get("gates") or [] if isinstance(gate, dict)]
    rows = [
        [
            escape_html(gate.get("name")),
            badge(gate.get("passed"), inconclusive=bool(gate.get("inconclusive"))),
            escape_html(gate.get("detail") or ""),
        ]
        for gate in gates
    ]
    return '<h3 id="gates">Gates</h3>' + table(["gate", "result", "detail"], rows)


def _accuracy(report: dict[str, Any]) -> str:
    accuracy, profile = as_dict(report.get("accuracy")), as_dict(report.get("profile"))
    teacher, student = accuracy.get("teacher_top1"), accuracy.get("student_top1")
    drop = html_percent(accuracy.get("top1_drop"))
    limit = html_percent(profile.get("max_top1_drop"))
    rows = [
        ["top-1", html_percent(teacher), html_percent(student)],
        ["top-5", MISSING, html_percent(accuracy.get("student_top5"))],
        ["top-1 drop", "", f"{drop} (at most {limit})"],
    ]
    source = lookup(report, "data", "test_source")
    images = escape_html(accuracy.get("images", MISSING))
    where = f", {escape_html(source)}" if source else ""
    head = ["metric", "teacher", "student (onnxruntime)"]
    return f'<h3 id="accuracy">Accuracy ({images} test images{where})</h3>' + table(
        head, rows, numeric=(1, 2)
    )


def _parity(report: dict[str, Any]) -> str:
    parity = as_dict(report.get("parity"))
    rows = [
        ["top-1 agreement", html_percent(parity.get("top1_agreement"))],
        ["max |logit diff|", html_number(parity.get("max_abs_logit_diff"), ".3g")],
        ["mean |logit diff|", html_number(parity.get("mean_abs_logit_diff"), ".3g")],
    ]
    measured = table(["measure", "value"], rows, numeric=(1,)) if parity else "<p>not measured</p>"
    return '<h3 id="parity">Parity (ONNX vs PyTorch student)</h3>' + measured


def _size(report: dict[str, Any]) -> str:
    size = as_dict(report.get("size"))
    onnx_kib = html_number(size.get("onnx_bytes"), ".0f", " KiB", 1 / 1024)
    rows = [
        [
            model,
            html_number(size.get(f"{model}_params"), ",.0f"),
            html_number(size.get(f"{model}_mflops"), ".1f"),
            onnx,
        ]
        for model, onnx in (("teacher", ""), ("student", onnx_kib))
    ]
    ratio = html_number(size.get("param_ratio"), ".1f", "x")
    return f'<h3 id="size">Size ({ratio} fewer params)</h3>' + table(
        ["model", "params", "MFLOPs", "ONNX"], rows, numeric=(1, 2, 3)
    )


def _speedup(report: dict[str, Any]) -> str:
    """The shipped model against its teacher, timed in alternation; slower is said in red."""
    speedup = as_dict(report.get("speedup"))
    if not speedup.get("measured"):
        note = escape_html(speedup.get("note", MISSING))
        return f'<p id="speedup">Speedup not measured: {note}</p>'
    slower = (finite(speedup.get("speedup")) or 0.0) < 1
    word = '<span class="fail">SLOWER than the teacher</span>' if slower else "faster"
    return (
        f'<p id="speedup">Measured: <b>{html_number(speedup.get("speedup"), ".2f", "x")}</b> '
        f"{word} at p{html_number(speedup.get('percentile'), 'g')} "
        f"({html_ms(speedup.get('student_ms'))} vs teacher {html_ms(speedup.get('teacher_ms'))}, "
        "timed in alternation).</p>"
    )


def _latency(report: dict[str, Any]) -> str:
    """Percentiles, cold start and repeats, against the budget (on the target when predicted)."""
    profile, latency = as_dict(report.get("profile")), as_dict(report.get("latency"))
    percentile = html_number(profile.get("percentile"), "g")
    budget, used = finite(profile.get("latency_ms")), finite(latency.get("budget_utilisation"))
    judged = finite(latency.get("predicted_target_ms")) or finite(latency.get("at_percentile_ms"))
    within_budget = None if judged is None or budget is None else judged <= budget
    repeats = latency.get("repeats_at_percentile_ms") or []
    repeats_text = ", ".join(html_number(ms) for ms in repeats) or MISSING
    mean_std = f"{html_ms(latency.get('mean_ms'))} &plusmn; {html_ms(latency.get('std_ms'))}"
    rows = [[f"p{q}", html_ms(latency.get(f"p{q}_ms")), ""] for q in (50, 90, 99)]
    rows += [
        ["mean &plusmn; std", mean_std, ""],
        ["cold start (session + first run)", html_ms(latency.get("cold_start_ms")), ""],
        [f"p{percentile} on this host", html_ms(latency.get("at_percentile_ms")), html_ms(budget)],
        [f"p{percentile}, repeats in fresh sessions", repeats_text,
         f"spread {html_percent(latency.get('spread'))}"],
    ]  # fmt: skip
    if latency.get("predicted_target_ms") is not None:
        device = escape_html(lookup(report, "selection", "calibrated_for") or "the target")
        predicted = html_ms(latency.get("predicted_target_ms"))
        rows.append([f"p{percentile} predicted on {device}", predicted, html_ms(budget)])
    rows.append(["budget used", html_percent(used) + _meter(used), badge(within_budget)])
    setup = (
        f"batch {escape_html(latency.get('batch_size', MISSING))}, "
        f"{escape_html(latency.get('intra_op_threads', MISSING))} intra-op thread(s), "
        f"{escape_html(latency.get('iterations', MISSING))} runs"
    )
    return f'<h3 id="latency">Latency (onnxruntime CPU, {setup})</h3>' + table(
        ["measure", "value", "budget"], rows, numeric=(1,)
    )


def _meter(used: float | None) -> str:
    """A bar filled to the share of the budget used: green within the budget, red over it."""
    if used is None:
        return ""
    filled, colour = min(100.0, 100 * used), PASS if used <= 1 else FAIL
    return (
        f'<span class="meter"><span style="width:{filled:.0f}%;background:{colour}"></span></span>'
    )


def _provenance(report: dict[str, Any]) -> str:
    """Enough to reproduce the run: inputs by hash, command, seed, versions, machine."""
    provenance = as_dict(report.get("provenance"))
    profile, teacher = as_dict(report.get("profile")), as_dict(report.get("teacher"))
    hardware = as_dict(provenance.get("hardware"))
    command = provenance.get("command")
    command = shlex.join(str(arg) for arg in command) if isinstance(command, list) else command
    versions = ", ".join(
        f"{escape_html(name)} {escape_html(version)}"
        for name, version in as_dict(provenance.get("versions")).items()
    )
    machine = (
        f"{escape_html(hardware.get('cpu') or MISSING)} "
        f"({escape_html(hardware.get('cpu_count', MISSING))} CPUs), "
        f"{escape_html(hardware.get('platform') or MISSING)}; "
        f"CUDA: {escape_html(hardware.get('cuda') or 'none')}"
    )
    teacher_file = (
        f"{escape_html(teacher.get('arch') or MISSING)} "
        f"({escape_html(teacher.get('format') or MISSING)}) {code(teacher.get('path'))}"
    )
    rows = [
        ["teacher sha256", code(teacher.get("sha256"))],
        ["teacher", teacher_file],
        [
            "profile",
            f"{escape_html(profile.get('name') or MISSING)} from {code(profile.get('source'))}",
        ],
        ["command", code(command)],
        ["seed", escape_html(provenance.get("seed", MISSING))],
        ["created (UTC)", escape_html(provenance.get("created_utc") or MISSING)],
        ["versions", versions or MISSING],
        ["hardware", machine],
    ]
    return section("provenance", "Provenance", table(["item", "value"], rows))


def _extras(report: dict[str, Any]) -> str:
    """Optional sections: int8 (keys vary, rendered generically) and warnings."""
    int8 = report.get("int8")
    out = "" if int8 is None else section("int8", "INT8 quantisation", key_value_table(int8))
    warnings = "".join(f"<li>{escape_html(text)}</li>" for text in report.get("warnings") or [])
    return out + (section("warnings", "Warnings", f"<ul>{warnings}</ul>") if warnings else "")


# In page order, each with the id its place on the page gets if it cannot be rendered.
SECTIONS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("header", _header),
    ("verification", _verification),
    ("selection", selection_section),
    ("distillation", distillation_section),
    ("bias", bias_section),
    ("provenance", _provenance),
    ("extras", _extras),
)


def render_html(report: dict[str, Any]) -> str:
    """The whole report as one self-contained HTML page (inline CSS and SVG, no scripts)."""
    parts = [_guard(name, render, report) for name, render in SECTIONS]
    passed = report.get("passed")
    verdict = MISSING if passed is None else "PASS" if passed else "FAIL"
    verdict = "INCONCLUSIVE" if report.get("exit_code") == 3 else verdict
    title = f"compressor report: {verdict} ({lookup(report, 'profile', 'name') or 'no profile'})"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width, initial-scale=1"><title>{escape_html(title)}</title>'
        f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>\n"
    )


def _guard(name: str, render: Callable[[dict[str, Any]], str], report: dict[str, Any]) -> str:
    """A malformed section (an old or hand-edited report) must not lose the rest of the page."""
    try:
        return render(report)
    except Exception as exc:
        failed = f'<p class="fail">could not be rendered: {escape_html(repr(exc))}</p>'
        return section(name, name, failed)
