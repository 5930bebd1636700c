"""Inline SVG charts for report.html: axes, ticks, lines, markers, bars; no dependencies.

Kept apart from the page so report_html.py reads as the report's sections. Every string that
reaches the SVG is HTML-escaped; non-finite values are skipped, never plotted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from compressor.report.formatting import escape_html, finite, percent

PASS, FAIL, WARN, INK, INK2 = "#1a7f37", "#cf222e", "#bc4c00", "#1f2328", "#57606a"
BLUE, GRID, LINE, MUTED = "#0969da", "#eaeef2", "#d0d7de", "#8c959f"
PALETTE = (BLUE, "#bf3989", PASS, WARN, "#8250df", INK2)
# The line chart's size and the margins around its plot area, in SVG user units.
WIDTH, HEIGHT = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 62, 20, 46, 46

Position = Callable[[float], float]  # a data value to an SVG coordinate


def _ticks(low: float, high: float, log: bool, integer: bool = False) -> list[float]:
    """About five readable tick values in [low, high] (decades on a log axis, 2 and 5 if few)."""
    if log:
        first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
        multipliers = (1,) if last - first > 3 else (1, 2, 5)
        return [
            multiplier * 10.0**decade
            for decade in range(first, last + 1)
            for multiplier in multipliers
            if low <= multiplier * 10.0**decade <= high
        ]
    rough_step = (high - low) / 5 or 1.0
    magnitude = 10.0 ** math.floor(math.log10(rough_step))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= rough_step)
    step = max(step, 1.0) if integer else step
    start = math.ceil(low / step - 1e-9) * step
    return [round(start + i * step, 12) for i in range(int((high - start) / step + 1e-9) + 1)]


def _element(tag: str, body: str = "", **attrs: Any) -> str:
    """An SVG element: ``font_size=`` becomes ``font-size``, floats are rounded, values escaped."""
    attributes = "".join(
        f' {name.replace("_", "-")}="{escape_html(_rounded(value))}"'
        for name, value in attrs.items()
    )
    return f"<{tag}{attributes}>{body}</{tag}>" if body else f"<{tag}{attributes}/>"


def _rounded(value: Any) -> Any:
    """Coordinates to one decimal place: finer steps are invisible and only lengthen the page."""
    return f"{value:.1f}" if isinstance(value, float) else value


def _text(x: float, y: float, text: Any, **attrs: Any) -> str:
    """Text with a white halo, so labels stay legible over grid lines and marks."""
    halo = {"stroke": "#fff", "stroke_width": 3, "paint_order": "stroke"}
    return _element("text", escape_html(text), x=x, y=y, **{**halo, **attrs})


def _reference_line(y: float, label: str, colour: str, width: float, left: bool = False) -> str:
    """A dashed line across the plot area at height ``y``, labelled at its right or left end."""
    line = _element(
        "line", x1=LEFT, x2=width - RIGHT, y1=y, y2=y, stroke=colour, stroke_dasharray="6 4"
    )
    x, anchor = (LEFT + 4, "start") if left else (width - RIGHT - 4, "end")
    return line + _text(x, y - 4, label, text_anchor=anchor, fill=colour)


def _frame(
    title: str,
    size: tuple[float, float, float],
    y_label: str,
    y_position: Position,
    y_ticks: list[float],
) -> str:
    """The SVG opening, title, horizontal grid with labels and the rotated y-axis title.

    ``size`` is (width, height, bottom margin); a chart wider than the default spans its row.
    """
    (width, height, bottom), wide = size, ' class="wide"'
    rotate = f"translate(16 {(height - bottom + TOP) / 2:.0f}) rotate(-90)"
    parts = [
        f'<figure{wide * (width > WIDTH)}><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 '
        f'{width:.0f} {height:.0f}" width="{width:.0f}" role="img" '
        f'aria-label="{escape_html(title)}" font-size="11">',
        _text(8, 16, title, font_size=13, font_weight=600),
        _text(0, 0, y_label, transform=rotate, text_anchor="middle"),
    ]
    for tick in y_ticks:
        y = y_position(tick)
        parts.append(_element("line", x1=LEFT, x2=width - RIGHT, y1=y, y2=y, stroke=GRID))
        parts.append(_text(LEFT - 6, y + 4, f"{tick:g}", text_anchor="end", fill=INK2))
    return "".join(parts)


def _marker(x: float, y: float, kind: str, colour: str, tooltip: str = "") -> str:
    """A point: a filled dot, an open ring (to circle another mark) or an open diamond."""
    title = _element("title", escape_html(tooltip)) if tooltip else ""
    if kind == "ring":
        return _element(
            "circle", title, cx=x, cy=y, r=8, fill="none", stroke=colour, stroke_width=2
        )
    if kind == "diamond":
        corners = f"{x:.1f},{y - 5:.1f} {x + 5:.1f},{y:.1f} {x:.1f},{y + 5:.1f} {x - 5:.1f},{y:.1f}"
        return _element(
            "polygon", title, points=corners, fill="#fff", stroke=colour, stroke_width=2
        )
    return _element("circle", title, cx=x, cy=y, r=4, fill=colour)


def _no_data(title: str) -> str:
    return f'<figure><p class="muted">{escape_html(title)}: no data</p></figure>'


def _scale(low: float, high: float, log: bool, start: float, length: float) -> Position:
    """Maps data values to SVG coordinates: ``low`` to ``start``, ``high`` to ``start + length``.

    A negative ``length`` runs upwards, as a y axis does.
    """

    def scaled(value: float) -> float:
        return math.log10(value) if log else value

    def position(value: float) -> float:
        return start + (scaled(value) - scaled(low)) / (scaled(high) - scaled(low)) * length

    return position


def _x_range(xs: list[float], log: bool) -> tuple[float, float]:
    """The x axis' extent: room for point labels on a log axis, a unit wide for a single x."""
    low, high = min(xs), max(xs)
    if log:
        return low / 1.6, high * 2.5
    return (low - 0.5, high + 0.5) if low == high else (low, high)


def _y_range(ys: list[float], log: bool, zero_y: bool) -> tuple[float, float]:
    """The y axis' extent, padded; from zero when ``zero_y`` (and the axis is linear)."""
    low, high = (min(0.0, *ys) if zero_y and not log else min(ys)), max(ys)
    pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
    if log:
        return low / 1.4, high * 1.4
    return (low if zero_y and low == 0 else low - pad), high + pad


def _point_label(x: float, y: float, label: Any, width: float) -> str:
    """A point's name, slanted so the labels of neighbouring points run in parallel."""
    offset = -7 if x + 6 * len(str(label)) > width else 7  # at the right edge: down and left
    turn = f"rotate(-25 {x + offset:.1f} {y - offset:.1f})"
    anchor = "end" if offset < 0 else "start"
    return _text(x + offset, y - offset, label, font_size=10, transform=turn, text_anchor=anchor)


def _x_axis(ticks: list[float], x_position: Position, width: float, label: str) -> str:
    """Vertical grid lines with their values, the plot area's border and the x-axis title."""
    parts = []
    for tick in ticks:
        x = x_position(tick)
        parts.append(_element("line", x1=x, x2=x, y1=TOP, y2=HEIGHT - BOTTOM, stroke=GRID))
        parts.append(_text(x, HEIGHT - BOTTOM + 15, f"{tick:g}", text_anchor="middle", fill=INK2))
    plot_area: dict[str, Any] = {"width": width - LEFT - RIGHT, "height": HEIGHT - TOP - BOTTOM}
    parts.append(_element("rect", x=LEFT, y=TOP, **plot_area, fill="none", stroke=LINE))
    parts.append(_text((width + LEFT) / 2, HEIGHT - 8, label, text_anchor="middle"))
    return "".join(parts)


def _series_marks(
    plotted: list[tuple[dict[str, Any], list[tuple[Any, ...]]]],
    x_position: Position,
    y_position: Position,
    width: float,
) -> str:
    """Each series' line, markers (with tooltips and labels) and its entry in the legend."""
    parts, legend_x = [], float(LEFT)
    for series, points in plotted:
        colour, kind = series.get("color", PALETTE[0]), series.get("marker", "dot")
        if series.get("line") and len(points) > 1:
            path = " ".join(f"{x_position(x):.1f},{y_position(y):.1f}" for x, y, *_ in points)
            line = {"points": path, "fill": "none", "stroke": colour, "stroke_width": 2}
            parts.append(_element("polyline", **line))
        for point in points:
            x, y = x_position(point[0]), y_position(point[1])
            parts.append(_marker(x, y, kind, colour, point[2] if len(point) > 2 else ""))
            if len(point) > 3 and point[3]:
                parts.append(_point_label(x, y, point[3], width))
        if series.get("name") and points:
            parts.append(_marker(legend_x + 5, 31, kind, colour))
            parts.append(_text(legend_x + 15, 35, series["name"]))
            legend_x += 30 + 6.0 * len(str(series["name"]))
    return "".join(parts)


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
    Points a log axis cannot show (zero or negative) are left out.
    """
    plotted = [
        (entry, [point for point in entry["points"] if min(point[0], point[1]) > 0 or not logx])
        for entry in series
    ]
    xs = [point[0] for _, points in plotted for point in points]
    ys = [point[1] for _, points in plotted for point in points]
    if not xs:
        return _no_data(title)
    references = [
        (value, label, colour)
        for y, label, colour in hlines
        if (value := finite(y)) is not None and (value > 0 or not logy)
    ]
    ys += [y for y, _, _ in references]
    (x_low, x_high), (y_low, y_high) = _x_range(xs, logx), _y_range(ys, logy, zero_y)
    width = 980 if logx else WIDTH  # the selection scatter gets a full row: its labels need room
    x_position = _scale(x_low, x_high, logx, LEFT, width - LEFT - RIGHT)
    y_position = _scale(y_low, y_high, logy, HEIGHT - BOTTOM, -(HEIGHT - TOP - BOTTOM))
    y_ticks = _ticks(y_low, y_high, logy)
    integer_x = not logx and all(float(x).is_integer() for x in xs)
    x_ticks = _ticks(x_low, x_high, logx, integer=integer_x)
    parts = [
        _frame(title, (width, HEIGHT, BOTTOM), labels[1], y_position, y_ticks),
        _x_axis(x_ticks, x_position, width, labels[0]),
    ]
    parts += [
        _reference_line(y_position(y), label, colour, width, left=i % 2 == 1)
        for i, (y, label, colour) in enumerate(references)
    ]
    for x1, y1, x2, y2 in links:
        ends: dict[str, Any] = {"x1": x_position(x1), "y1": y_position(y1)}
        ends |= {"x2": x_position(x2), "y2": y_position(y2)}
        parts.append(_element("line", "", **ends, stroke=MUTED, stroke_dasharray="2 3"))
    parts.append(_series_marks(plotted, x_position, y_position, width))
    return "".join(parts) + "</svg></figure>"


def bar_chart(title: str, items: list[tuple[str, float]], mean: Any, ylabel: str) -> str:
    """Vertical bars of fractions (shown as %), with the all-classes rate as a reference line."""
    if not items:
        return _no_data(title)
    count, longest = len(items), max(len(name) for name, _ in items)
    slanted = count > 12 or longest * count > 72  # upright names would overlap
    width = max(WIDTH, 16 * count + 90)
    bottom = (30 + 5 * min(longest, 24)) if slanted else BOTTOM
    height = 260 + bottom
    y_max = max([value for _, value in items] + [finite(mean) or 0.0]) * 112 or 1.0
    y_position = _scale(0, y_max, False, height - bottom, -(height - TOP - bottom))
    slot = (width - LEFT - RIGHT) / count  # each bar's share of the width; the bar fills 70%
    parts = [_frame(title, (width, height, bottom), ylabel, y_position, _ticks(0.0, y_max, False))]
    for i, (name, value) in enumerate(items):
        left, centre = LEFT + (i + 0.15) * slot, LEFT + (i + 0.5) * slot
        label_y, top = height - bottom + 14, y_position(100 * value)
        tip = _element("title", f"{escape_html(name)}: {percent(value)}")
        bar: dict[str, Any] = {"width": slot * 0.7, "height": y_position(0) - top}
        parts.append(_element("rect", tip, x=left, y=top, **bar, fill=BLUE))
        slant = {"text_anchor": "end", "transform": f"rotate(-55 {centre:.1f} {label_y})"}
        upright = {"text_anchor": "middle"}
        parts.append(_text(centre, label_y, name[:24], **(slant if slanted else upright)))
        if count <= 20:
            value_label = f"{100 * value:.1f}"
            parts.append(_text(centre, top - 4, value_label, text_anchor="middle", fill=INK2))
    mean_value = finite(mean)
    if mean_value is not None:
        parts.append(_reference_line(y_position(100 * mean), "", FAIL, width))
        caption = f"- - all classes {percent(mean_value)}"
        parts.append(_text(width - RIGHT, TOP - 10, caption, text_anchor="end", fill=FAIL))
    zero = y_position(0)
    parts.append(_element("line", x1=LEFT, x2=width - RIGHT, y1=zero, y2=zero, stroke=INK2))
    return "".join(parts) + "</svg></figure>"
