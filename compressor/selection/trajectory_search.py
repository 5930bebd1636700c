"""Finding the largest derived student that fits: a search along the pruning trajectory.

Each step of the trajectory (:mod:`compressor.models.pruning`) is timed exactly like a ladder
candidate (``compressor.selection.choose`` passes the timing in: ONNX, the profile's threads and
batch, the shipped precision, the same timer). Latency falls as pruning removes channels, so
the least-pruned step that qualifies is found by search, not by timing every step; untimed
steps stay in the table with no latency.

The search starts at a guess (:func:`guess_step`: the step whose MACs ratio matches the
latency the profile asks of the teacher) and gallops from there: when the guess qualifies it
times the next less-pruned step, and that step failing ends the search after two timings;
otherwise the probes double their distance until the answer is bracketed, then bisect the
bracket. A poor guess costs about 2 log2(steps) timings, a plain bisection log2(steps) + 1;
without a guess (an untimed teacher) the search is that bisection. Each timing is an ONNX
export and a paired timing against the teacher, so on resnet50 two saved timings are about
half a minute.
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


def guess_step(
    macs_ratios: Sequence[float], teacher_ms: float | None, needed_ms: float
) -> int | None:
    """The least-pruned step whose MACs ratio is at most ``needed_ms / teacher_ms``.

    Latency proportional to MACs is optimistic for small models (fixed per-operator costs),
    so the guess errs toward too large a step and the gallop moves on to more pruning;
    squeeze-excitation removal makes step 0 faster than its MACs say, an error the other way.
    None without a teacher timing (the search is then a plain bisection).
    """
    if not macs_ratios or teacher_ms is None or teacher_ms <= 0:
        return None
    wanted = needed_ms / teacher_ms
    return next((i for i, r in enumerate(macs_ratios) if r <= wanted), len(macs_ratios) - 1)


def search_trajectory(
    rows: Sequence[Row],
    time_step: Callable[[int], None],
    prior: int | None = None,
    holds: Callable[[Row], bool] | None = None,
    start: int | None = None,
) -> DerivedSearch:
    """Search the rows (least pruned first) for the first step that qualifies.

    ``time_step(i)`` times step ``i`` and fills in its row; each step is timed at most once.
    ``prior`` is the step an earlier run chose (:mod:`compressor.selection.memory`): it is
    timed first and kept without a search while ``holds`` says it is not clearly worse, and is
    otherwise where the search starts. ``start`` is the guess to start from (see
    :func:`guess_step`); with neither, the search is a bisection that times the most pruned
    step first.
    """
    search = DerivedSearch(rows)
    if not rows:
        return search

    def qualifies(index: int) -> bool:
        if rows[index].at_percentile_ms is None:  # each step is timed at most once
            time_step(index)
        return rows[index].qualifies

    if prior is not None and holds is not None:
        qualifies(prior)
        if holds(rows[prior]):
            search.chosen, search.kept = rows[prior].name, True
            return search
        start = prior

    last = len(rows) - 1
    if start is None:
        low, high = 0, last
        if not qualifies(high):
            return search
    else:
        bracket = _gallop(qualifies, min(max(start, 0), last), last)
        if bracket is None:
            return search
        low, high = bracket
    while low < high:
        middle = (low + high) // 2
        if qualifies(middle):
            high = middle
        else:
            low = middle + 1
    search.chosen = rows[high].name
    return search


def _gallop(qualifies: Callable[[int], bool], start: int, last: int) -> tuple[int, int] | None:
    """(low, high): step ``high`` qualifies and every step before ``low`` does not; None when
    no step up to ``last`` qualifies. Probes move away from ``start`` by 1, 2, 4, ... steps."""
    if qualifies(start):
        high, distance = start, 1
        while high > 0:
            probe = max(high - distance, 0)
            if not qualifies(probe):
                return probe + 1, high
            high, distance = probe, distance * 2
        return 0, 0
    low, distance = start + 1, 1  # every step before ``low`` is known not to qualify
    while low <= last:
        probe = min(start + distance, last)
        if qualifies(probe):
            return low, probe
        low, start, distance = probe + 1, probe, distance * 2
    return None
