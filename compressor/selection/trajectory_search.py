"""Finding the largest derived student that fits: a search along the pruning trajectory.

Each step of the trajectory (:mod:`compressor.models.pruning`) is timed exactly like a ladder
candidate (``compressor.selection.choose`` passes the timing in: ONNX, the profile's threads and
batch,
the shipped precision, the same timer). Latency falls as pruning removes channels, so a
bisection finds the least-pruned step that qualifies with about log2(steps) + 1 timings instead
of one per step; untimed steps stay in the table with no latency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Row(Protocol):
    """A table row of one trajectory step (``compressor.selection.choose.Candidate`` is one)."""

    name: str
    at_percentile_ms: float | None

    @property
    def qualifies(self) -> bool: ...


@dataclass
class DerivedSearch:
    """Every trajectory step as a table row; ``chosen`` is the least pruned that qualifies."""

    rows: Sequence[Row] = field(default_factory=list)
    chosen: str | None = None
    kept: bool = False  # the chosen step is a remembered choice that still holds

    @property
    def fastest(self) -> Row | None:
        timed = [c for c in self.rows if c.at_percentile_ms is not None]
        return min(timed, key=lambda c: c.at_percentile_ms or 0.0) if timed else None


def search_trajectory(
    rows: Sequence[Row],
    time_step: Callable[[int], None],
    prior: int | None = None,
    holds: Callable[[Row], bool] | None = None,
) -> DerivedSearch:
    """Bisect the rows (least pruned first) for the first step that qualifies.

    ``time_step(i)`` times step ``i`` and fills in its row; each step is timed at most once.
    ``prior`` is the step an earlier run chose (:mod:`compressor.selection.memory`): it is
    timed first and kept without a search while ``holds`` says it is not clearly worse.
    """
    search = DerivedSearch(rows)
    if not rows:
        return search
    if prior is not None and holds is not None:
        time_step(prior)
        if holds(rows[prior]):
            search.chosen, search.kept = rows[prior].name, True
            return search

    def qualifies(index: int) -> bool:
        if rows[index].at_percentile_ms is None:
            time_step(index)
        return rows[index].qualifies

    low, high = 0, len(rows) - 1
    if not qualifies(high):
        return search
    while low < high:
        middle = (low + high) // 2
        if qualifies(middle):
            high = middle
        else:
            low = middle + 1
    search.chosen = rows[high].name
    return search
