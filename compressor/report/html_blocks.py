"""Building blocks of report.html: its stylesheet, escaped cells, tables, badges and sections.

Any value may be missing or of the wrong type (an old or hand-edited report.json), so the helpers
here take ``Any``, never raise on odd input, and escape every string they are given. Cells that
arrive already as HTML (a badge, a ``<code>``) are passed through unchanged by ``table``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from compressor.report.formatting import escape_html, finite, milliseconds, percent

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
.warn{color:#9a6700;font-weight:600}.badge.warn{background:#9a6700;color:#fff}
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

MISSING = "n/a"
CHOSEN_ROW = ' class="chosen"'


def lookup(obj: Any, *path: Any) -> Any:
    """Walk nested dicts and lists; None when a step is missing (older reports lack keys)."""
    for key in path:
        try:
            obj = obj[key]
        except (KeyError, IndexError, TypeError):
            return None
    return obj


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty one, so that ``.get`` works on any section."""
    return value if isinstance(value, dict) else {}


def _shown(value: Any, text: Callable[[float], str]) -> str:
    """``text`` of a finite number; "n/a" for None, NaN and infinities; anything else as it is."""
    number = finite(value)
    if number is None:
        return MISSING if value is None or isinstance(value, float) else escape_html(value)
    return escape_html(text(number))


def html_number(value: Any, spec: str = ".3f", suffix: str = "", scale: float = 1.0) -> str:
    """A number as escaped HTML text: ``value * scale`` in format ``spec``, then ``suffix``."""
    return _shown(value, lambda number: f"{number * scale:{spec}}{suffix}")


def html_percent(value: Any) -> str:
    return _shown(value, percent)


def html_ms(value: Any) -> str:
    return _shown(value, milliseconds)


def code(value: Any) -> str:
    """``value`` in a ``<code>`` element, "n/a" when it is None or empty."""
    return f"<code>{escape_html(MISSING if value is None or value == '' else value)}</code>"


def badge(passed: Any, word: bool = False, inconclusive: bool = False) -> str:
    """pass/FAIL in colour (a filled PASS/FAIL badge with ``word``); "n/a" when not judged;
    INCONCLUSIVE when a contended host or noise left it undecided (exit code 3)."""
    if passed is None:
        return f'<span class="muted">{MISSING}</span>'
    if inconclusive and not passed:
        return f'<span class="{"badge " * word}warn">INCONCLUSIVE</span>'
    label, colour = ("PASS" if word else "pass", "pass") if passed else ("FAIL", "fail")
    return f'<span class="{"badge " * word}{colour}">{label}</span>'


def section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{escape_html(title)}</h2>{body}</section>'


def table(
    head: list[str], rows: list[list[str]], numeric: Iterable[int] = (), marked: int = -1
) -> str:
    """A table of pre-escaped cells; ``numeric`` columns are right-aligned, row ``marked`` is
    highlighted (the chosen candidate or recipe)."""
    right_aligned = set(numeric)
    align = [' class="n"' if i in right_aligned else "" for i in range(len(head))]
    header = "".join(
        f"<th{cls}>{escape_html(name)}</th>" for cls, name in zip(align, head, strict=True)
    )
    out = [f"<table><thead><tr>{header}</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cells = "".join(f"<td{cls}>{cell}</td>" for cls, cell in zip(align, row, strict=False))
        out.append(f"<tr{CHOSEN_ROW if i == marked else ''}>{cells}</tr>")
    return "".join(out) + "</tbody></table>"


def key_value_table(data: Any) -> str:
    """Generic key/value table, for optional sections whose keys this module does not fix."""
    if not isinstance(data, dict):
        return f"<code>{escape_html(json.dumps(data, default=str))}</code>"
    rows = [
        [
            f"<code>{escape_html(key)}</code>",
            key_value_table(value) if isinstance(value, dict | list) else html_number(value, ".6g"),
        ]
        for key, value in data.items()
    ]
    return table(["key", "value"], rows)
