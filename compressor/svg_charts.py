"""Inline SVG charts for report.html: axes, ticks, lines, markers, bars; no dependencies.

Kept apart from the page so report_html.py reads as the report's sections. Every string that
reaches the SVG is HTML-escaped; non-finite values are skipped, never plotted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

PASS, FAIL, WARN, INK, INK2 = "#1a7f37", "#cf222e", "#bc4c00", "#1f2328", "#57606a"
BLUE, GRID, LINE, MUTED = "#0969da", "#eaeef2", "#d0d7de", "#8c959f"
PALETTE = (BLUE, "#bf3989", PASS, WARN, "#8250df", INK2)
W, H, L, R, T, B = 560, 320, 62, 20, 46, 46  # line-chart size and margins (SVG user units)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _pct(value: Any) -> str:
    v = finite(value)
    return "n/a" if v is None else f"{100 * v:.2f}%"


def finite(value: Any) -> float | None:
    """A finite float, or None: JSON NaN, None, strings and bools are neither shown nor plotted."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _ticks(lo: float, hi: float, log: bool, integer: bool = False) -> list[float]:
    """About five readable tick values in [lo, hi] (decades on a log axis, with 2 and 5 if few)."""
    if log:
        a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        steps = (1,) if b - a > 3 else (1, 2, 5)
        return [m * 10.0**d for d in range(a, b + 1) for m in steps if lo <= m * 10.0**d <= hi]
    raw = (hi - lo) / 5 or 1.0
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step = max(step, 1.0) if integer else step
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _el(tag: str, body: str = "", **attrs: Any) -> str:
    """An SVG element: ``font_size=`` becomes ``font-size``, floats are rounded, values escaped."""
    a = "".join(f' {k.replace("_", "-")}="{_e(_num(v))}"' for k, v in attrs.items())
    return f"<{tag}{a}>{body}</{tag}>" if body else f"<{tag}{a}/>"


def _num(v: Any) -> Any:
    return f"{v:.1f}" if isinstance(v, float) else v


def _txt(x: float, y: float, text: Any, **attrs: Any) -> str:
    """Text with a white halo, so labels stay legible over grid lines and marks."""
    halo = {"stroke": "#fff", "stroke_width": 3, "paint_order": "stroke"}
    return _el("text", _e(text), x=x, y=y, **{**halo, **attrs})


def _hline(y: float, label: str, colour: str, w: float, left: bool = False) -> str:
    line = _el("line", x1=L, x2=w - R, y1=y, y2=y, stroke=colour, stroke_dasharray="6 4")
    x, anchor = (L + 4, "start") if left else (w - R - 4, "end")
    return line + _txt(x, y - 4, label, text_anchor=anchor, fill=colour)


def _frame(title: str, size: tuple[float, float, float], ylabel: str, sy: Any, yt: Any) -> str:
    """The SVG opening, title, horizontal grid with labels and the rotated y-axis title."""
    (w, h, bottom), wide = size, ' class="wide"'
    rot = f"translate(16 {(h - bottom + T) / 2:.0f}) rotate(-90)"
    out = [
        f'<figure{wide * (w > W)}><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w:.0f} '
        f'{h:.0f}" width="{w:.0f}" role="img" aria-label="{_e(title)}" font-size="11">',
        _txt(8, 16, title, font_size=13, font_weight=600),
        _txt(0, 0, ylabel, transform=rot, text_anchor="middle"),
    ]
    for v in yt:
        out.append(_el("line", x1=L, x2=w - R, y1=sy(v), y2=sy(v), stroke=GRID))
        out.append(_txt(L - 6, sy(v) + 4, f"{v:g}", text_anchor="end", fill=INK2))
    return "".join(out)


def _marker(x: float, y: float, kind: str, colour: str, tip: str = "") -> str:
    t = _el("title", _e(tip)) if tip else ""
    if kind == "ring":
        return _el("circle", t, cx=x, cy=y, r=8, fill="none", stroke=colour, stroke_width=2)
    if kind == "diamond":
        pts = f"{x:.1f},{y - 5:.1f} {x + 5:.1f},{y:.1f} {x:.1f},{y + 5:.1f} {x - 5:.1f},{y:.1f}"
        return _el("polygon", t, points=pts, fill="#fff", stroke=colour, stroke_width=2)
    return _el("circle", t, cx=x, cy=y, r=4, fill=colour)


def line_chart(
    title: str,
    series: list[dict[str, Any]],
    hlines: Sequence[tuple[Any, str, str]] = (),
    labels: tuple[str, str] = ("", ""),
    logx: bool = False,
    zero_y: bool = True,
    links: Sequence[tuple[float, float, float, float]] = (),
    logy: bool = False,
) -> str:
    """An SVG line/scatter chart, drawn here so the page needs no JS or chart library.

    A series is {name, points: [(x, y, tooltip, label)], color, line, marker ('dot', 'ring',
    'diamond')}; hlines are (y, label, colour) reference lines; links join two points (dotted).
    """
    ok = [(s, [p for p in s["points"] if min(p[0], p[1]) > 0 or not logx]) for s in series]
    xs, ys = [p[0] for _, ps in ok for p in ps], [p[1] for _, ps in ok for p in ps]
    if not xs:
        return f'<figure><p class="muted">{_e(title)}: no data</p></figure>'
    refs = [
        (v, lab, c) for y, lab, c in hlines if (v := finite(y)) is not None and (v > 0 or not logy)
    ]
    ys += [y for y, _, _ in refs]
    x0, x1 = min(xs), max(xs)
    x0, x1 = (x0 / 1.6, x1 * 2.5) if logx else (x0 - 0.5, x1 + 0.5) if x0 == x1 else (x0, x1)
    y0, y1 = (min(0.0, *ys) if zero_y and not logy else min(ys)), max(ys)
    pad = (y1 - y0) * 0.08 or abs(y1) * 0.1 or 1.0
    y0, y1 = (y0 / 1.4, y1 * 1.4) if logy else (y0 if zero_y and y0 == 0 else y0 - pad, y1 + pad)
    w = 980 if logx else W  # the selection scatter gets a full row: its labels need room

    def tx(v: float, log: bool = logx) -> float:
        return math.log10(v) if log else v

    def sx(v: float) -> float:
        return L + (tx(v) - tx(x0)) / (tx(x1) - tx(x0)) * (w - L - R)

    def sy(v: float) -> float:
        return H - B - (tx(v, logy) - tx(y0, logy)) / (tx(y1, logy) - tx(y0, logy)) * (H - T - B)

    o = [_frame(title, (w, H, B), labels[1], sy, _ticks(y0, y1, logy))]
    for v in _ticks(x0, x1, logx, integer=not logx and all(float(x).is_integer() for x in xs)):
        o.append(_el("line", x1=sx(v), x2=sx(v), y1=T, y2=H - B, stroke=GRID))
        o.append(_txt(sx(v), H - B + 15, f"{v:g}", text_anchor="middle", fill=INK2))
    o.append(_el("rect", x=L, y=T, width=w - L - R, height=H - T - B, fill="none", stroke=LINE))
    o.append(_txt((w + L) / 2, H - 8, labels[0], text_anchor="middle"))
    o += [_hline(sy(y), lab, c, w, left=i % 2 == 1) for i, (y, lab, c) in enumerate(refs)]
    for ax, ay, bx, by in links:
        xy: dict[str, Any] = {"x1": sx(ax), "y1": sy(ay), "x2": sx(bx), "y2": sy(by)}
        o.append(_el("line", "", **xy, stroke=MUTED, stroke_dasharray="2 3"))
    lx = float(L)
    for s, pts in ok:
        colour, kind = s.get("color", PALETTE[0]), s.get("marker", "dot")
        if s.get("line") and len(pts) > 1:
            path = " ".join(f"{sx(p[0]):.1f},{sy(p[1]):.1f}" for p in pts)
            o.append(_el("polyline", points=path, fill="none", stroke=colour, stroke_width=2))
        for p in pts:
            px, py = sx(p[0]), sy(p[1])
            o.append(_marker(px, py, kind, colour, p[2] if len(p) > 2 else ""))
            if len(p) > 3 and p[3]:  # slanted, so labels of neighbouring points run in parallel
                dx = -7 if px + 6 * len(str(p[3])) > w else 7  # at the right edge: down-left
                turn = f"rotate(-25 {px + dx:.1f} {py - dx:.1f})"
                kw = {"transform": turn, "text_anchor": "end" if dx < 0 else "start"}
                o.append(_txt(px + dx, py - dx, p[3], font_size=10, **kw))
        if s.get("name") and pts:
            o += [_marker(lx + 5, 31, kind, colour), _txt(lx + 15, 35, s["name"])]
            lx += 30 + 6.0 * len(str(s["name"]))
    return "".join(o) + "</svg></figure>"


def bar_chart(title: str, items: list[tuple[str, float]], mean: Any, ylabel: str) -> str:
    """Vertical bars of fractions (shown as %), with the all-classes rate as a reference line."""
    if not items:
        return f'<figure><p class="muted">{_e(title)}: no data</p></figure>'
    n, longest = len(items), max(len(k) for k, _ in items)
    rotate = n > 12 or longest * n > 72
    w, bottom = max(W, 16 * n + 90), (30 + 5 * min(longest, 24)) if rotate else B
    h, hi = 260 + bottom, max([v for _, v in items] + [finite(mean) or 0.0]) * 112 or 1.0
    slot = (w - L - R) / n

    def sy(v: float) -> float:
        return h - bottom - v / hi * (h - T - bottom)

    o = [_frame(title, (w, h, bottom), ylabel, sy, _ticks(0.0, hi, False))]
    for i, (name, v) in enumerate(items):
        x, cx, ly, top = L + (i + 0.15) * slot, L + (i + 0.5) * slot, h - bottom + 14, sy(100 * v)
        tip = _el("title", f"{_e(name)}: {_pct(v)}")
        o.append(_el("rect", tip, x=x, y=top, width=slot * 0.7, height=sy(0) - top, fill=BLUE))
        turn = {"transform": f"rotate(-55 {cx:.1f} {ly})", "text_anchor": "end"} if rotate else {}
        o.append(_txt(cx, ly, name[:24], **{"text_anchor": "middle", **turn}))
        if n <= 20:
            o.append(_txt(cx, top - 4, f"{100 * v:.1f}", text_anchor="middle", fill=INK2))
    if finite(mean) is not None:
        o.append(_hline(sy(100 * mean), "", FAIL, w))
        o.append(_txt(w - R, T - 10, f"- - all classes {_pct(mean)}", text_anchor="end", fill=FAIL))
    return (
        "".join(o)
        + _el("line", x1=L, x2=w - R, y1=sy(0), y2=sy(0), stroke=INK2)
        + "</svg></figure>"
    )
