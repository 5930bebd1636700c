"""Self-contained ``report.html``: the content of report.md plus charts, in one file.

Reports are read from CI artefacts and e-mail attachments, often offline, so the page uses only
inline CSS and inline SVG generated here: no scripts, fonts, images or network. Every string
taken from the report is HTML-escaped, and every field is optional so older reports render.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable
from functools import partial
from html import escape
from typing import Any

from compressor.svg_charts import BLUE, FAIL, INK, INK2, PALETTE, PASS, WARN, bar_chart, line_chart
from compressor.svg_charts import finite as _f

CHOSEN = ' class="chosen"'
CSS = """
:root{--pass:#1a7f37;--fail:#cf222e;--muted:#57606a;--line:#d0d7de}*{box-sizing:border-box}
body{margin:0;background:#f6f8fa;color:#1f2328;font:14px/1.5 system-ui,-apple-system,"Segoe UI",
Roboto,"Helvetica Neue",Arial,sans-serif}main{max-width:1120px;margin:0 auto;padding:24px}
header,section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 20px;
margin:0 0 16px}h1{font-size:26px;margin:0 0 4px}h3{font-size:15px;margin:18px 0 6px}
h2{font-size:19px;margin:0 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
table{border-collapse:collapse;margin:6px 0 10px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #eaeef2;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}.n{text-align:right}.muted{color:var(--muted)}
.pass{color:var(--pass);font-weight:600}.fail{color:var(--fail);font-weight:600}
.badge{display:inline-block;padding:1px 12px;border-radius:14px;font-size:.8em}
.badge.pass{background:var(--pass);color:#fff}.badge.fail{background:var(--fail);color:#fff}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f6f8fa;
padding:1px 4px;border-radius:4px;overflow-wrap:anywhere}.scroll{overflow-x:auto}
.charts,.grid{display:flex;flex-wrap:wrap;gap:12px 32px}figure{margin:0;flex:0 1 480px}
svg{width:100%;height:auto;font-family:inherit}figure.wide{flex-basis:100%}
.charts>div{flex:1 1 320px;min-width:0}summary{cursor:pointer;color:var(--muted)}
tr.chosen td{background:#ddf4ff;font-weight:600}table.cm td.diag{background:#eaeef2;color:#8c959f}
table.cm td{text-align:center;min-width:26px;padding:2px 4px;font-size:12px}
table.cm th{white-space:nowrap}
.meter{display:inline-block;width:140px;height:10px;margin-left:8px;background:#eaeef2;
border-radius:5px;overflow:hidden;vertical-align:middle}.meter>span{display:block;height:100%}
@media print{body{background:#fff}main{max-width:none;padding:0}header,section{border:none;
padding:0 0 8px}figure,table,svg{break-inside:avoid}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _get(obj: Any, *path: Any) -> Any:
    """Walk nested dicts and lists; None when a step is missing (older reports lack keys)."""
    for key in path:
        try:
            obj = obj[key]
        except (KeyError, IndexError, TypeError):
            return None
    return obj


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _fmt(value: Any, spec: str = ".3f", suffix: str = "", scale: float = 1.0) -> str:
    v = _f(value)
    if v is None:
        return "n/a" if value is None or isinstance(value, float) else _e(value)
    return _e(f"{v * scale:{spec}}{suffix}")


_pct = partial(_fmt, spec=".2f", suffix="%", scale=100.0)
_ms = partial(_fmt, spec=".3f", suffix=" ms")


def _badge(passed: Any, word: bool = False) -> str:
    if passed is None:
        return '<span class="muted">n/a</span>'
    label, cls = ("PASS" if word else "pass", "pass") if passed else ("FAIL", "fail")
    return f'<span class="{"badge " * word}{cls}">{label}</span>'


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>'


def _table(head: list[str], rows: list[list[str]], num: Iterable[int] = (), mark: int = -1) -> str:
    """A table of pre-escaped cells; ``num`` columns are right-aligned, row ``mark`` highlighted."""
    cls = [' class="n"' if i in set(num) else "" for i in range(len(head))]
    out = ["<table><thead><tr>", *(f"<th{c}>{_e(h)}</th>" for c, h in zip(cls, head, strict=True))]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cells = "".join(f"<td{c}>{v}</td>" for c, v in zip(cls, row, strict=False))
        out.append(f"<tr{CHOSEN if i == mark else ''}>{cells}</tr>")
    return "".join(out) + "</tbody></table>"


def _kv(data: Any) -> str:
    """Generic key/value table, for optional sections whose keys this module does not fix."""
    if not isinstance(data, dict):
        return f"<code>{_e(json.dumps(data, default=str))}</code>"
    rows = [
        [f"<code>{_e(k)}</code>", _kv(v) if isinstance(v, dict | list) else _fmt(v, ".6g")]
        for k, v in data.items()
    ]
    return _table(["key", "value"], rows)


def _code(value: Any) -> str:
    return f"<code>{_e('n/a' if value is None or value == '' else value)}</code>"


def _header(r: dict[str, Any]) -> str:
    p = _d(r.get("profile")).get
    arch, chosen = _code(_get(r, "teacher", "arch")), _code(_get(r, "selection", "chosen"))
    desc = f" ({_e(p('description'))})" if p("description") else ""
    return (
        f'<header id="summary"><h1>compressor report {_badge(r.get("passed"), word=True)}</h1>'
        f"<p>Teacher {arch} &rarr; student {chosen} for profile {_code(p('name'))}{desc}.</p>"
        "</header>"
    )


def _verification(r: dict[str, Any]) -> str:
    """What the verify stage judged (gates, accuracy, parity, latency) beside the limits."""
    p, a, t = _d(r.get("profile")).get, _d(r.get("accuracy")).get, _d(r.get("latency")).get
    gates = [g for g in r.get("gates") or [] if isinstance(g, dict)]
    rows = [[_e(g.get("name")), _badge(g.get("passed")), _e(g.get("detail") or "")] for g in gates]
    src = _get(r, "data", "test_source")
    out = ['<h3 id="gates">Gates</h3>' + _table(["gate", "result", "detail"], rows)]
    rows = [
        ["top-1", _pct(a("teacher_top1")), _pct(a("student_top1"))],
        ["top-5", "n/a", _pct(a("student_top5"))],
        ["top-1 drop", "", f"{_pct(a('top1_drop'))} (at most {_pct(p('max_top1_drop'))})"],
    ]
    out.append(
        f'<div class="grid"><div><h3 id="accuracy">Accuracy ({_e(a("images", "n/a"))} test images'
        f"{f', {_e(src)}' if src else ''})</h3>"
        + _table(["metric", "teacher", "student (onnxruntime)"], rows, num=(1, 2))
    )
    par = _d(r.get("parity"))
    rows = [
        ["top-1 agreement", _pct(par.get("top1_agreement"))],
        ["max |logit diff|", _fmt(par.get("max_abs_logit_diff"), ".3g")],
        ["mean |logit diff|", _fmt(par.get("mean_abs_logit_diff"), ".3g")],
    ]
    out.append('</div><div><h3 id="parity">Parity (ONNX vs PyTorch student)</h3>')
    out.append(_table(["measure", "value"], rows, num=(1,)) if par else "<p>not measured</p>")
    s = _d(r.get("size")).get
    kib = _fmt(s("onnx_bytes"), ".0f", " KiB", 1 / 1024)
    rows = [
        [who, _fmt(s(f"{who}_params"), ",.0f"), _fmt(s(f"{who}_mflops"), ".1f"), onnx]
        for who, onnx in (("teacher", ""), ("student", kib))
    ]
    out.append(
        f'</div><div><h3 id="size">Size ({_fmt(s("param_ratio"), ".1f", "x")} fewer params)</h3>'
    )
    out.append(_table(["model", "params", "MFLOPs", "ONNX"], rows, (1, 2, 3)))
    speed = _d(r.get("speedup"))
    if speed.get("measured"):
        slower = (_f(speed.get("speedup")) or 0.0) < 1
        word = '<span class="fail">SLOWER than the teacher</span>' if slower else "faster"
        out.append(
            f'<p id="speedup">Measured: <b>{_fmt(speed.get("speedup"), ".2f", "x")}</b> {word} '
            f"at p{_fmt(speed.get('percentile'), 'g')} ({_ms(speed.get('student_ms'))} vs "
            f"teacher {_ms(speed.get('teacher_ms'))}, timed in alternation).</p>"
        )
    else:
        out.append(f'<p id="speedup">Speedup not measured: {_e(speed.get("note", "n/a"))}</p>')
    out.append("</div></div>")
    pc, budget, util = _fmt(p("percentile"), "g"), _f(p("latency_ms")), _f(t("budget_utilisation"))
    judged = _f(t("predicted_target_ms")) or _f(t("at_percentile_ms"))
    ok = None if judged is None or budget is None else judged <= budget
    width, colour = min(100.0, 100 * (util or 0.0)), PASS if (util or 0.0) <= 1 else FAIL
    meter = f'<span class="meter"><span style="width:{width:.0f}%;background:{colour}"></span>'
    reps = ", ".join(_fmt(v) for v in t("repeats_at_percentile_ms") or []) or "n/a"
    rows = [[f"p{q}", _ms(t(f"p{q}_ms")), ""] for q in (50, 90, 99)]
    rows += [
        ["mean &plusmn; std", f"{_ms(t('mean_ms'))} &plusmn; {_ms(t('std_ms'))}", ""],
        ["cold start (session + first run)", _ms(t("cold_start_ms")), ""],
        [f"p{pc} on this host", _ms(t("at_percentile_ms")), _ms(budget)],
        [f"p{pc}, repeats in fresh sessions", reps, f"spread {_pct(t('spread'))}"],
    ]
    if t("predicted_target_ms") is not None:
        dev = _e(_get(r, "selection", "calibrated_for") or "the target")
        rows.append([f"p{pc} predicted on {dev}", _ms(t("predicted_target_ms")), _ms(budget)])
    rows.append(["budget used", _pct(util) + (meter + "</span>") * (util is not None), _badge(ok)])
    out.append(
        f'<h3 id="latency">Latency (onnxruntime CPU, batch {_e(t("batch_size", "n/a"))}, '
        f"{_e(t('intra_op_threads', 'n/a'))} intra-op thread(s), {_e(t('iterations', 'n/a'))} "
        "runs)</h3>" + _table(["measure", "value", "budget"], rows, num=(1,))
    )
    return _section("verification", "Verification", "".join(out))


def _selection(r: dict[str, Any]) -> str:
    """Every candidate timed, so a reader sees how close the chosen student came to the budget."""
    sel = _d(r.get("selection"))
    cands = [c for c in sel.get("candidates") or [] if isinstance(c, dict)]
    chosen, pc = sel.get("chosen"), _fmt(sel.get("percentile"), "g")
    pts: dict[str, list[tuple[Any, ...]]] = {"fit": [], "over": [], "pred": [], "mark": []}
    links = []
    for c in cands:
        x, name, pred = _f(c.get("mflops")), str(c.get("name")), _f(c.get("predicted_ms"))
        host = _f(c.get("at_percentile_ms"))
        host = _f(c.get("p90_ms")) if host is None else host
        if x is None or host is None:
            continue
        tip = f"{name}: {x:.1f} MFLOPs, host p{pc} {host:.3f} ms"
        pts["fit" if c.get("fits") else "over"].append((x, host, tip, name))
        if pred is not None:
            pts["pred"].append((x, pred, f"{name}: predicted {pred:.3f} ms on the target"))
            links.append((x, host, x, pred))
        if name == chosen:
            pts["mark"].append((x, host if pred is None else pred, f"chosen: {name}"))
    teacher = _d(sel.get("teacher"))
    t_x, t_ms = _f(teacher.get("mflops")), _f(teacher.get("at_percentile_ms"))
    if t_x is not None and t_ms is not None:
        pts["teacher"] = [(t_x, t_ms, f"teacher {teacher.get('arch')}: {t_ms:.3f} ms (fp32)")]
    device = sel.get("calibrated_for") or "target"
    series = [
        {"name": f"host p{pc}, fits target", "points": pts["fit"], "color": PASS},
        {"name": f"host p{pc}, over target", "points": pts["over"], "color": FAIL},
        {"name": f"predicted on {device}", "points": pts["pred"], "marker": "diamond"},
        {"name": "chosen", "points": pts["mark"], "color": INK, "marker": "ring"},
        {"name": "teacher", "points": pts.get("teacher", []), "color": WARN, "marker": "diamond"},
    ]
    budget = _get(r, "profile", "latency_ms") or sel.get("budget_ms")
    refs = [(budget, "budget", FAIL), (sel.get("target_ms"), "target (budget less margin)", WARN)]
    axes = ("MFLOPs per image (log scale)", "latency ms (log scale)")
    title = "Latency vs FLOPs, every candidate timed"
    chart = line_chart(title, series, refs, axes, logx=True, links=links, logy=True)
    fits: dict[Any, str] = {
        True: '<span class="pass">yes</span>',
        False: '<span class="fail">no</span>',
    }
    rows = [
        [_e(c.get("name")), _fmt(c.get("params"), ",.0f"), _fmt(c.get("mflops"), ".1f")]
        + [_fmt(c.get(k)) for k in ("p50_ms", "p90_ms", "predicted_ms")]
        + [_fmt(c.get("speedup"), ".2f", "x")]
        + [fits.get(c.get("fits"), '<span class="muted">not timed</span>')]
        + [fits.get(c.get("qualifies") if c.get("fits") is not None else None, "")]
        for c in cands
    ]
    if t_x is not None:
        rows.insert(0, [
            f"teacher <code>{_e(teacher.get('arch'))}</code>",
            _fmt(teacher.get("params"), ",.0f"), _fmt(t_x, ".1f"),
            _fmt(teacher.get("p50_ms")), _fmt(teacher.get("p90_ms")), "", "1.00x",
            fits.get(teacher.get("meets_budget"), ""), "",
        ])  # fmt: skip
    mark = next((i for i, c in enumerate(cands) if c.get("name") == chosen), -1)
    mark += 1 if t_x is not None and mark >= 0 else 0
    untimed = sum(c.get("fits") is None for c in cands)
    head = (
        f"<p>Family <code>{_e(sel.get('family') or 'n/a')}</code>, chosen <code>"
        f"{_e(chosen or 'n/a')}</code>; target {_ms(sel.get('target_ms'))} at p{pc} (budget "
        f"{_ms(sel.get('budget_ms'))} less the safety margin), at least "
        f"{_fmt(sel.get('min_speedup'), 'g', 'x')} faster than the teacher, timed at "
        f"{_e(sel.get('precision') or 'fp32')}."
        + (f" {untimed} candidate(s) not timed, so not plotted." if untimed else "")
    )
    cols = ["candidate", "params", "MFLOPs", "host p50 ms", "host p90 ms", "predicted target ms"]
    table = _table([*cols, "speedup", "fits", "qualifies"], rows, num=range(1, 7), mark=mark)
    body = f'{head}</p><div class="charts">{chart}</div>{table}'
    return _section("selection", "Student selection", body)


def _distillation(r: dict[str, Any]) -> str:
    """Training curves: whether the student converged and how the bias weight b(e) moved."""
    dist = _d(r.get("distillation"))
    d, teacher = dist.get, _f(dist.get("teacher_val_top1"))
    rows_in = [h for h in d("history") or [] if isinstance(h, dict)]
    hist = [{**h, "epoch": _f(h.get("epoch")) or i + 1} for i, h in enumerate(rows_in)]

    def line(key: str, colour: str, scale: float = 1.0, name: str = "") -> dict[str, Any]:
        pts = [
            (h["epoch"], v * scale, f"epoch {h['epoch']}: {key} {v:.4g}")
            for h in hist
            if (v := _f(h.get(key))) is not None
        ]
        return {"name": name or key, "points": pts, "color": colour, "line": True}

    terms = [line(k, c) for k, c in zip(("loss", "ce", "distill", "right"), PALETTE, strict=False)]
    vals = [line("val_top1", BLUE, 100, "student val"), line("train_top1", INK2, 100, "train")]
    ref = [(None if teacher is None else 100 * teacher, "teacher val top-1", FAIL)]
    bias = [
        line("b", PALETTE[4], 1, "b(e)"),
        line("teacher_wrong_fraction", FAIL, 1, "teacher wrong"),
    ]
    charts = [
        line_chart("Loss terms per epoch", terms, labels=("epoch", "training loss")),
        line_chart("Top-1 per epoch", vals, ref, ("epoch", "top-1 %"), zero_y=False),
        line_chart("Bias weight b(e), teacher errors", bias, labels=("epoch", "weight / fraction")),
    ]
    rows = []
    for h in hist:
        b, wrong = "-" if _f(h.get("b")) is None else _fmt(h["b"]), h.get("teacher_wrong_fraction")
        rows.append([_fmt(h["epoch"], "g"), _fmt(h.get("loss"), ".4f"), _pct(h.get("val_top1")), b])
        rows[-1].append(_pct(wrong))
    loss = _d(d("loss"))
    keys = ("method", "bias_aware", "rectification", "schedule", "ce_weight", "temperature")
    settings = ", ".join(f"{k} <code>{_e(loss[k])}</code>" for k in keys if k in loss)
    body = (
        f"<p>{settings or 'loss settings n/a'}.</p><p>{_e(_get(dist, 'train', 'epochs') or 'n/a')} "
        f"epochs on {_e(d('device', 'n/a'))} ({_e(step_summary(dist))}) in "
        f"{_fmt(d('seconds'), '.1f', ' s')}; best validation "
        f"epoch {_e(d('best_epoch', 'n/a'))} (val top-1 {_pct(d('best_val_top1'))}, teacher "
        f'{_pct(teacher)}).</p><div class="charts">{"".join(charts)}'
    )
    table = _table(["epoch", "loss", "val top-1", "b(e)", "teacher wrong"], rows, num=range(5))
    pilots = _pilots(d("recipe_choice"))
    return _section("distillation", "Distillation", f"{pilots}{body}<div>{table}</div></div>")


def _pilots(choice: Any) -> str:
    """``--method auto``: which recipe won its pilot on the validation split."""
    if not isinstance(choice, dict) or not choice.get("pilots"):
        return ""
    pilots = [p for p in choice["pilots"] if isinstance(p, dict)]
    rows = [
        [_e(p.get("recipe")), _pct(p.get("val_top1")), _fmt(p.get("seconds"), ".0f", " s"),
         "chosen" if p.get("recipe") == choice.get("winner") else ""]
        for p in pilots
    ]  # fmt: skip
    intro = (
        f"<p>Recipe chosen on the validation split: <code>{_e(choice.get('winner'))}</code> "
        f"(pilots of {_e(choice.get('pilot_epochs'))} of {_e(choice.get('total_epochs'))} "
        "epochs from the same weights and batches; the winner's pilot was continued).</p>"
    )
    mark = next((i for i, p in enumerate(pilots) if p.get("recipe") == choice.get("winner")), -1)
    return intro + _table(["recipe", "pilot val top-1", "pilot time", ""], rows, (1, 2), mark)


def step_summary(distillation: dict[str, Any]) -> str:
    """How the training step ran, e.g. "bf16, channels-last, teacher BN folded, 2 ranks"."""
    step = distillation.get("step") or {}
    parts = [str(step.get("precision", "fp32"))]
    if step.get("channels_last"):
        parts.append("channels-last")
    if step.get("teacher_batchnorm_folded"):
        parts.append("teacher BN folded")
    if step.get("compiled"):
        parts.append("torch.compile")
    if int(distillation.get("world_size") or 1) > 1:
        parts.append(f"{distillation['world_size']} ranks")
    return ", ".join(parts)


def _confusion(cm: Any, names: list[str]) -> str:
    """Teacher errors as a heat map; colour scales with the largest off-diagonal count."""
    if not isinstance(cm, list) or not cm or not all(isinstance(row, list) for row in cm):
        return ""
    n = len(cm)
    names = names if len(names) == n else [str(i) for i in range(n)]
    off = [_f(v) or 0.0 for i, row in enumerate(cm) for j, v in enumerate(row) if i != j]
    top = max(off, default=0.0) or 1.0
    short = all(len(c) <= 3 for c in names)  # else columns are numbered: names would be too wide
    heads = "".join(
        f'<th title="{_e(c)}">{_e(c if short else j)}</th>' for j, c in enumerate(names)
    )
    out = [f"<tr><th>true \\ pred.</th>{heads}<th>errors</th></tr>"]
    for i, row in enumerate(cm):
        label = names[i] if short else f"{i} {names[i]}"
        cells, errs = [f"<tr><th>{_e(label)}</th>"], 0.0
        for j, v in enumerate(row):
            val, text = _f(v) or 0.0, _fmt(v, "g")
            if i == j:
                cells.append(f'<td class="diag">{text}</td>')
                continue
            errs, a = errs + val, val / top
            tip = _e(f"{names[i]} predicted as {names[j] if j < n else j}: {text}")
            style = f"background:rgba(207,34,46,{a:.2f});color:{'#fff' if a > 0.55 else INK}"
            cells.append(f'<td style="{style}" title="{tip}">{text if val else ""}</td>')
        out.append("".join(cells) + f'<td class="n">{errs:g}</td></tr>')
    return (
        '<h3 id="confusion">Teacher confusion, training split</h3><p class="muted">Rows: true '
        f"class{'' if short else ' (numbered)'}, columns: predicted class; the diagonal (correct) "
        f'is greyed.</p><div class="scroll"><table class="cm">{"".join(out)}</table></div>'
    )


def _bias(r: dict[str, Any]) -> str:
    """Which classes the teacher gets wrong: the errors bias-aware distillation corrects for."""
    bias = _d(r.get("bias"))
    per, mean = _d(bias.get("teacher_train_error_per_class")), bias.get("teacher_train_error")
    items = [(str(k), f) for k, v in per.items() if (f := _f(v)) is not None]
    names = [str(k) for k in per] or [str(c) for c in _get(r, "data", "class_names") or []]
    chart = bar_chart("Teacher wrong-prediction rate per class", items, mean, "train error %")
    rows = [[_e(k), _pct(v)] for k, v in per.items()]
    table = _table(["class", "teacher train error"], rows, num=(1,))
    confusion = _confusion(bias.get("teacher_confusion"), names)
    body = (
        f"<p>Teacher error on the (un-augmented) training split: {_pct(mean)}.</p>"
        f'<div class="charts">{chart}<div>{confusion}</div></div>'
        f"<details><summary>per-class table</summary>{table}</details>"
    )
    return _section("bias", "Teacher bias", body)


def _provenance(r: dict[str, Any]) -> str:
    """Enough to reproduce the run: inputs by hash, command, seed, versions, machine."""
    p, m, t = _d(r.get("provenance")).get, _d(r.get("profile")).get, _d(r.get("teacher")).get
    hw, cmd = _d(p("hardware")).get, p("command")
    cmd = shlex.join(str(c) for c in cmd) if isinstance(cmd, list) else cmd
    versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in _d(p("versions")).items())
    machine = f"{_e(hw('cpu') or 'n/a')} ({_e(hw('cpu_count', 'n/a'))} CPUs), "
    machine += f"{_e(hw('platform') or 'n/a')}; CUDA: {_e(hw('cuda') or 'none')}"
    rows = [
        ["teacher sha256", _code(t("sha256"))],
        ["teacher", f"{_e(t('arch') or 'n/a')} ({_e(t('format') or 'n/a')}) {_code(t('path'))}"],
        ["profile", f"{_e(m('name') or 'n/a')} from {_code(m('source'))}"],
        ["command", _code(cmd)],
        ["seed", _e(p("seed", "n/a"))],
        ["created (UTC)", _e(p("created_utc") or "n/a")],
        ["versions", versions or "n/a"],
        ["hardware", machine],
    ]
    return _section("provenance", "Provenance", _table(["item", "value"], rows))


def _extras(r: dict[str, Any]) -> str:
    """Optional sections: int8 (keys vary, rendered generically) and warnings."""
    out = "" if r.get("int8") is None else _section("int8", "INT8 quantisation", _kv(r["int8"]))
    warnings = "".join(f"<li>{_e(w)}</li>" for w in r.get("warnings") or [])
    return out + (_section("warnings", "Warnings", f"<ul>{warnings}</ul>") if warnings else "")


def render_html(report: dict[str, Any]) -> str:
    """The whole report as one self-contained HTML page (inline CSS and SVG, no scripts)."""
    sections = (_header, _verification, _selection, _distillation, _bias, _provenance, _extras)
    parts = [_guard(render, report) for render in sections]
    passed = report.get("passed")
    verdict = "n/a" if passed is None else "PASS" if passed else "FAIL"
    title = f"compressor report: {verdict} ({_get(report, 'profile', 'name') or 'no profile'})"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>\n"
    )


def _guard(render: Callable[[dict[str, Any]], str], report: dict[str, Any]) -> str:
    """A malformed section (an old or hand-edited report) must not lose the rest of the page."""
    try:
        return render(report)
    except Exception as exc:
        name = render.__name__.strip("_")
        return _section(name, name, f'<p class="fail">could not be rendered: {_e(repr(exc))}</p>')
