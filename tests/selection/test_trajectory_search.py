"""The search along the pruning trajectory: it finds the least-pruned qualifying step for every
monotone pattern and every starting guess, and a good guess costs two timings."""

from __future__ import annotations

import math

import pytest

from compressor.selection.trajectory_search import guess_step, search_trajectory
from tests.fakes import SearchRow


def _search(steps: int, first_qualifying: int, start: int | None) -> tuple[str | None, list[int]]:
    """Search ``steps`` rows of which those from ``first_qualifying`` on qualify."""
    rows = [SearchRow(f"s{i}") for i in range(steps)]
    timed: list[int] = []

    def time_step(i: int) -> None:
        timed.append(i)
        rows[i].at_percentile_ms, rows[i].fits = float(steps - i), i >= first_qualifying

    return search_trajectory(rows, time_step, start=start).chosen, timed


@pytest.mark.parametrize("steps", [1, 2, 5, 16])
def test_every_start_finds_the_least_pruned_qualifying_step(steps: int) -> None:
    bound = 2 * math.ceil(math.log2(steps)) + 2 if steps > 1 else 1
    for first in range(steps + 1):  # steps + 1: no step qualifies
        expected = f"s{first}" if first < steps else None
        for start in [None, *range(steps)]:
            chosen, timed = _search(steps, first, start)
            assert chosen == expected, (steps, first, start)
            assert len(timed) == len(set(timed)) <= bound, (steps, first, start, timed)


def test_a_right_guess_costs_two_timings_and_no_guess_a_bisection() -> None:
    chosen, timed = _search(16, first_qualifying=9, start=9)
    assert chosen == "s9" and timed == [9, 8]
    chosen, timed = _search(16, first_qualifying=9, start=8)  # one step too large
    assert chosen == "s9" and timed == [8, 9]
    chosen, timed = _search(16, first_qualifying=9, start=None)
    assert chosen == "s9" and timed[0] == 15 and len(timed) == 5


def test_the_guess_is_the_least_pruned_step_within_the_needed_macs_ratio() -> None:
    ratios = [0.99, 0.77, 0.55, 0.40, 0.20]
    assert guess_step(ratios, teacher_ms=10.0, needed_ms=6.0) == 2  # 0.6: 0.55 is the first
    assert guess_step(ratios, teacher_ms=10.0, needed_ms=12.0) == 0  # the teacher already fits
    assert guess_step(ratios, teacher_ms=10.0, needed_ms=0.5) == 4  # beyond the trajectory
    assert guess_step(ratios, teacher_ms=None, needed_ms=6.0) is None  # untimed teacher
