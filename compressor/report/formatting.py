"""Number and text formatting shared by report.md, report.html and its SVG charts.

Only the formats live here (how a percentage, a latency or a flag is written), so that both
renderers write the same number the same way. What to show for a missing value differs by
renderer and stays with it: report.md reads a complete report.json, while report.html also
renders old or hand-edited reports and so shows anything that is not a finite number as text.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any


def finite(value: Any) -> float | None:
    """A finite float, or None: JSON NaN, None, strings and bools are neither shown nor plotted."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def escape_html(value: Any) -> str:
    """``str(value)`` safe for HTML text and quoted attribute values."""
    return escape(str(value), quote=True)


def percent(fraction: float) -> str:
    """A fraction as a percentage with two decimals: 0.1234 -> "12.34%"."""
    return f"{100 * fraction:.2f}%"


def milliseconds(ms: float) -> str:
    """A latency in milliseconds with three decimals: 1.5 -> "1.500 ms"."""
    return f"{ms:.3f} ms"


def number(value: float) -> str:
    """A plain measurement with three decimals, as in the latency columns of a table."""
    return f"{value:.3f}"


def yes_no(flag: bool | None) -> str:
    """ "yes", "no", or "-" when the question was not asked."""
    return "-" if flag is None else ("yes" if flag else "no")


def step_summary(distillation: dict[str, Any]) -> str:
    """How the training step ran, e.g. "bf16, channels-last, teacher BN folded, 2 ranks"."""
    step = distillation.get("step") or {}
    parts = [str(step.get("precision", "fp32"))]
    if step.get("channels_last"):
        parts.append("channels-last")
    if step.get("teacher_batchnorm_folded"):
        parts.append("teacher BN folded")
    if step.get("compiled"):
        mode = step.get("compile_mode")
        parts.append(f"torch.compile ({mode})" if mode and mode != "default" else "torch.compile")
    if int(distillation.get("world_size") or 1) > 1:
        parts.append(f"{distillation['world_size']} ranks")
    return ", ".join(parts)


def recipe_decision(choice: dict[str, Any]) -> str:
    """Why ``--method auto`` chose its winner (a ``RecipeChoice`` dict), in one line."""
    test, incumbent = choice.get("test"), choice.get("incumbent")
    if test:
        verdict = "switched" if choice["winner"] != incumbent else "kept the incumbent"
        return (
            f"paired McNemar test of {test['challenger']} against {incumbent} on the same "
            f"validation images: {test['gained']} gained, {test['lost']} lost, one-sided "
            f"p = {test['p_value']:.3g} (switch below {test['alpha']}): {verdict}"
        )
    if choice["winner"] == incumbent and not choice.get("margin"):
        return f"no pilot beat {incumbent}"
    return (
        f"kept unless a pilot beat {incumbent} by more than "
        f"{100 * float(choice.get('margin') or 0.0):.1f} points (unpaired: no per-image results)"
    )
