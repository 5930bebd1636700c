"""The sections of report.html on how the student was made: selection, distillation, bias.

That is, every candidate timed against the budget, the training curves (and the recipe pilots of
``--method auto``), and the teacher's errors that bias-aware distillation corrects for. Like the
rest of the page, each section accepts old or hand-edited reports with fields missing.
"""

from __future__ import annotations

from typing import Any

from compressor.report.formatting import escape_html, finite, step_summary
from compressor.report.html_blocks import (
    MISSING,
    as_dict,
    html_ms,
    html_number,
    html_percent,
    lookup,
    section,
    table,
)
from compressor.report.svg_charts import (
    BLUE,
    FAIL,
    INK,
    INK2,
    PALETTE,
    PASS,
    WARN,
    bar_chart,
    line_chart,
)

Point = tuple[Any, ...]  # (x, y, tooltip[, label]) as svg_charts.line_chart takes it


def selection_section(report: dict[str, Any]) -> str:
    """Every candidate timed, so a reader sees how close the chosen student came to the budget."""
    selection = as_dict(report.get("selection"))
    candidates = [
        candidate for candidate in selection.get("candidates") or [] if isinstance(candidate, dict)
    ]
    percentile = html_number(selection.get("percentile"), "g")
    chart = _selection_chart(report, selection, candidates, percentile)
    candidate_table = _candidate_table(selection, candidates)
    untimed = sum(candidate.get("fits") is None for candidate in candidates)
    intro = (
        f"<p>Family <code>{escape_html(selection.get('family') or MISSING)}</code>, chosen <code>"
        f"{escape_html(selection.get('chosen') or MISSING)}</code>; target "
        f"{html_ms(selection.get('target_ms'))} at p{percentile} (budget "
        f"{html_ms(selection.get('budget_ms'))} less the safety margin), at least "
        f"{html_number(selection.get('min_speedup'), 'g', 'x')} faster than the teacher"
        + (
            f" (median at least {html_number(selection['target_speedup'], '.3g', 'x')}: the "
            "safety margin)"
            if selection.get("target_speedup") is not None
            else ""
        )
        + ", timed "
        f"at {escape_html(selection.get('precision') or 'fp32')}."
        + (f" {untimed} candidate(s) not timed, so not plotted." if untimed else "")
        + _source(selection)
    )
    body = f'{intro}</p><div class="charts">{chart}</div>{candidate_table}'
    return section("selection", "Student selection", body)


def _selection_chart(
    report: dict[str, Any],
    selection: dict[str, Any],
    candidates: list[dict[str, Any]],
    percentile: str,
) -> str:
    """Latency against MFLOPs for every timed candidate, the teacher, the budget and target."""
    chosen = selection.get("chosen")
    fit: list[Point] = []
    over: list[Point] = []
    predictions: list[Point] = []
    chosen_ring: list[Point] = []
    links = []  # host timing to the prediction on the target, for the same candidate
    for candidate in candidates:
        mflops, name = finite(candidate.get("mflops")), str(candidate.get("name"))
        predicted = finite(candidate.get("predicted_ms"))
        host = finite(candidate.get("at_percentile_ms"))
        host = finite(candidate.get("p90_ms")) if host is None else host
        if mflops is None or host is None:
            continue
        tip = f"{name}: {mflops:.1f} MFLOPs, host p{percentile} {host:.3f} ms"
        (fit if candidate.get("fits") else over).append((mflops, host, tip, name))
        if predicted is not None:
            tip = f"{name}: predicted {predicted:.3f} ms on the target"
            predictions.append((mflops, predicted, tip))
            links.append((mflops, host, mflops, predicted))
        if name == chosen:
            chosen_ring.append(
                (mflops, host if predicted is None else predicted, f"chosen: {name}")
            )
    teacher = as_dict(selection.get("teacher"))
    teacher_mflops, teacher_ms = (
        finite(teacher.get("mflops")),
        finite(teacher.get("at_percentile_ms")),
    )
    teacher_point: list[Point] = []
    if teacher_mflops is not None and teacher_ms is not None:
        tip = f"teacher {teacher.get('arch')}: {teacher_ms:.3f} ms (fp32)"
        teacher_point.append((teacher_mflops, teacher_ms, tip))
    device = selection.get("calibrated_for") or "target"
    series = [
        {"name": f"host p{percentile}, fits target", "points": fit, "color": PASS},
        {"name": f"host p{percentile}, over target", "points": over, "color": FAIL},
        {"name": f"predicted on {device}", "points": predictions, "marker": "diamond"},
        {"name": "chosen", "points": chosen_ring, "color": INK, "marker": "ring"},
        {"name": "teacher", "points": teacher_point, "color": WARN, "marker": "diamond"},
    ]
    budget = lookup(report, "profile", "latency_ms") or selection.get("budget_ms")
    target = selection.get("target_ms")
    references = [(budget, "budget", FAIL), (target, "target (budget less margin)", WARN)]
    axes = ("MFLOPs per image (log scale)", "latency ms (log scale)")
    title = "Latency vs FLOPs, every candidate timed"
    return line_chart(title, series, references, axes, logx=True, links=links, logy=True)


def _source(selection: dict[str, Any]) -> str:
    """The student source line: pruned from the teacher or a fresh ladder architecture."""
    if not selection.get("source_reason"):
        return ""
    text = (
        f" Student source: <strong>{escape_html(selection.get('student_source'))}</strong> "
        f"({escape_html(selection.get('source_reason'))})."
    )
    derived = as_dict(selection.get("derived"))
    if derived:
        text += (
            f" Before any training, after BatchNorm recalibration on "
            f"{html_number(derived.get('bn_recalibration_images'), ',.0f')} training images, "
            f"it scored {html_percent(derived.get('val_top1_before_training'))} on "
            "validation."
        )
    return text


def _candidate_table(selection: dict[str, Any], candidates: list[dict[str, Any]]) -> str:
    """One row per candidate (the teacher first, when timed), the chosen one highlighted."""
    yes_no_cells: dict[Any, str] = {
        True: '<span class="pass">yes</span>',
        False: '<span class="fail">no</span>',
    }
    rows = [
        [
            escape_html(candidate.get("name")),
            html_number(candidate.get("params"), ",.0f"),
            html_number(candidate.get("mflops"), ".1f"),
            *(html_number(candidate.get(key)) for key in ("p50_ms", "p90_ms", "predicted_ms")),
            html_number(candidate.get("speedup"), ".2f", "x"),
            yes_no_cells.get(candidate.get("fits"), '<span class="muted">not timed</span>'),
            yes_no_cells.get(
                candidate.get("qualifies") if candidate.get("fits") is not None else None, ""
            ),
        ]
        for candidate in candidates
    ]
    teacher = as_dict(selection.get("teacher"))
    teacher_mflops = finite(teacher.get("mflops"))
    if teacher_mflops is not None:
        teacher_row = [
            f"teacher <code>{escape_html(teacher.get('arch'))}</code>",
            html_number(teacher.get("params"), ",.0f"),
            html_number(teacher_mflops, ".1f"),
            html_number(teacher.get("p50_ms")),
            html_number(teacher.get("p90_ms")),
            "",
            "1.00x",
            yes_no_cells.get(teacher.get("meets_budget"), ""),
            "",
        ]
        rows.insert(0, teacher_row)
    names = [candidate.get("name") for candidate in candidates]
    chosen = next((i for i, name in enumerate(names) if name == selection.get("chosen")), -1)
    chosen += 1 if teacher_mflops is not None and chosen >= 0 else 0
    head = ["candidate", "params", "MFLOPs", "host p50 ms", "host p90 ms", "predicted target ms"]
    head += ["speedup", "fits", "qualifies"]
    return table(head, rows, numeric=range(1, 7), marked=chosen)


def distillation_section(report: dict[str, Any]) -> str:
    """Training curves: whether the student converged and how the bias weight b(e) moved."""
    distillation = as_dict(report.get("distillation"))
    teacher_top1 = finite(distillation.get("teacher_val_top1"))
    epochs = [row for row in distillation.get("history") or [] if isinstance(row, dict)]
    history = [{**row, "epoch": finite(row.get("epoch")) or i + 1} for i, row in enumerate(epochs)]
    charts = _training_charts(history, teacher_top1)
    rows = [
        [
            html_number(row["epoch"], "g"),
            html_number(row.get("loss"), ".4f"),
            html_percent(row.get("val_top1")),
            "-" if finite(row.get("b")) is None else html_number(row["b"]),
            html_percent(row.get("teacher_wrong_fraction")),
        ]
        for row in history
    ]
    loss = as_dict(distillation.get("loss"))
    keys = ("method", "bias_aware", "rectification", "bias_weighting", "schedule", "ce_weight",
            "temperature")  # fmt: skip
    settings = ", ".join(
        f"{key} <code>{escape_html(loss[key])}</code>" for key in keys if key in loss
    )
    epochs_run = escape_html(lookup(distillation, "train", "epochs") or MISSING)
    body = (
        f"<p>{settings or 'loss settings n/a'}.</p><p>{epochs_run} epochs on "
        f"{escape_html(distillation.get('device', MISSING))} "
        f"({escape_html(step_summary(distillation))}) in "
        f"{html_number(distillation.get('seconds'), '.1f', ' s')}; best validation epoch "
        f"{escape_html(distillation.get('best_epoch', MISSING))} (val top-1 "
        f"{html_percent(distillation.get('best_val_top1'))}, teacher {html_percent(teacher_top1)})"
        f'.</p><div class="charts">{charts}'
    )
    head = ["epoch", "loss", "val top-1", "b(e)", "teacher wrong"]
    epoch_table = table(head, rows, numeric=range(5))
    pilots = _pilots(distillation.get("recipe_choice"))
    return section("distillation", "Distillation", f"{pilots}{body}<div>{epoch_table}</div></div>")


def _epoch_series(
    history: list[dict[str, Any]], key: str, colour: str, scale: float = 1.0, name: str = ""
) -> dict[str, Any]:
    """One line of a training chart: ``key`` of each epoch (times ``scale``), where finite."""
    points = [
        (row["epoch"], value * scale, f"epoch {row['epoch']}: {key} {value:.4g}")
        for row in history
        if (value := finite(row.get(key))) is not None
    ]
    return {"name": name or key, "points": points, "color": colour, "line": True}


def _training_charts(history: list[dict[str, Any]], teacher_top1: float | None) -> str:
    """Loss terms, top-1 against the teacher's, and the bias weight b(e) per epoch."""
    terms = [
        _epoch_series(history, key, colour)
        for key, colour in zip(("loss", "ce", "distill", "right"), PALETTE, strict=False)
    ]
    top1 = [
        _epoch_series(history, "val_top1", BLUE, 100, "student val"),
        _epoch_series(history, "train_top1", INK2, 100, "train"),
    ]
    teacher = [(None if teacher_top1 is None else 100 * teacher_top1, "teacher val top-1", FAIL)]
    bias = [
        _epoch_series(history, "b", PALETTE[4], 1, "b(e)"),
        _epoch_series(history, "teacher_wrong_fraction", FAIL, 1, "teacher wrong"),
    ]
    return (
        line_chart("Loss terms per epoch", terms, labels=("epoch", "training loss"))
        + line_chart("Top-1 per epoch", top1, teacher, ("epoch", "top-1 %"), zero_y=False)
        + line_chart(
            "Bias weight b(e), teacher errors", bias, labels=("epoch", "weight / fraction")
        )
    )


def _pilots(choice: Any) -> str:
    """``--method auto``: which recipe won its pilot on the validation split."""
    if not isinstance(choice, dict) or not choice.get("pilots"):
        return ""
    pilots = [pilot for pilot in choice["pilots"] if isinstance(pilot, dict)]
    winner = choice.get("winner")
    rows = [
        [
            escape_html(pilot.get("recipe")),
            html_percent(pilot.get("val_top1")),
            html_number(pilot.get("seconds"), ".0f", " s"),
            "chosen" if pilot.get("recipe") == winner else "",
        ]
        for pilot in pilots
    ]
    intro = (
        f"<p>Recipe chosen on the validation split: <code>{escape_html(winner)}</code> "
        f"(pilots of {escape_html(choice.get('pilot_epochs'))} of "
        f"{escape_html(choice.get('total_epochs'))} epochs from the same weights and batches; "
        "the winner's pilot was continued).</p>"
    )
    chosen = next((i for i, pilot in enumerate(pilots) if pilot.get("recipe") == winner), -1)
    head = ["recipe", "pilot val top-1", "pilot time", ""]
    return intro + table(head, rows, numeric=(1, 2), marked=chosen)


def bias_section(report: dict[str, Any]) -> str:
    """Which classes the teacher gets wrong: the errors bias-aware distillation corrects for."""
    bias = as_dict(report.get("bias"))
    per_class = as_dict(bias.get("teacher_train_error_per_class"))
    mean = bias.get("teacher_train_error")
    bars = [
        (str(name), error)
        for name, value in per_class.items()
        if (error := finite(value)) is not None
    ]
    names = [str(name) for name in per_class]
    names = names or [str(name) for name in lookup(report, "data", "class_names") or []]
    chart = bar_chart("Teacher wrong-prediction rate per class", bars, mean, "train error %")
    rows = [[escape_html(name), html_percent(value)] for name, value in per_class.items()]
    per_class_table = table(["class", "teacher train error"], rows, numeric=(1,))
    confusion = _confusion(bias.get("teacher_confusion"), names)
    body = (
        f"<p>Teacher error on the (un-augmented) training split: {html_percent(mean)}.</p>"
        f'<div class="charts">{chart}<div>{confusion}</div></div>'
        f"<details><summary>per-class table</summary>{per_class_table}</details>"
    )
    return section("bias", "Teacher bias", body)


def _confusion(matrix: Any, names: list[str]) -> str:
    """Teacher errors as a heat map; colour scales with the largest off-diagonal count."""
    list_of_lists = isinstance(matrix, list) and all(isinstance(row, list) for row in matrix)
    if not matrix or not list_of_lists:
        return ""
    names = names if len(names) == len(matrix) else [str(i) for i in range(len(matrix))]
    errors = [
        finite(count) or 0.0
        for i, row in enumerate(matrix)
        for j, count in enumerate(row)
        if i != j
    ]
    most = max(errors, default=0.0) or 1.0
    short = all(len(name) <= 3 for name in names)  # else columns are numbered: names too wide
    heads = "".join(
        f'<th title="{escape_html(name)}">{escape_html(name if short else j)}</th>'
        for j, name in enumerate(names)
    )
    rows = [f"<tr><th>true \\ pred.</th>{heads}<th>errors</th></tr>"]
    rows += [_confusion_row(i, row, names, short, most) for i, row in enumerate(matrix)]
    return (
        '<h3 id="confusion">Teacher confusion, training split</h3><p class="muted">Rows: true '
        f"class{'' if short else ' (numbered)'}, columns: predicted class; the diagonal (correct) "
        f'is greyed.</p><div class="scroll"><table class="cm">{"".join(rows)}</table></div>'
    )


def _confusion_row(i: int, row: list[Any], names: list[str], short: bool, most: float) -> str:
    """True class ``i``: its counts, shaded by their share of ``most``, and its error total."""
    label = names[i] if short else f"{i} {names[i]}"
    cells, errors = [f"<tr><th>{escape_html(label)}</th>"], 0.0
    for j, value in enumerate(row):
        count, text = finite(value) or 0.0, html_number(value, "g")
        if i == j:
            cells.append(f'<td class="diag">{text}</td>')
            continue
        errors, shade = errors + count, count / most
        predicted = names[j] if j < len(names) else j
        tip = escape_html(f"{names[i]} predicted as {predicted}: {text}")
        style = f"background:rgba(207,34,46,{shade:.2f});color:{'#fff' if shade > 0.55 else INK}"
        cells.append(f'<td style="{style}" title="{tip}">{text if count else ""}</td>')
    return "".join(cells) + f'<td class="n">{errors:g}</td></tr>'
