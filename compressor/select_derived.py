"""Finding the largest derived student that fits: a search along the pruning trajectory.

Each step of the trajectory (:mod:`compressor.pruning`) is timed exactly like a ladder
candidate (:func:`compressor.select.time_candidate`: ONNX, the profile's threads and batch, the
shipped precision, the same timer). Latency falls as pruning removes channels, so a bisection
finds the least-pruned step that qualifies with about log2(steps) + 1 timings instead of one per
step; untimed steps stay in the table with no latency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from compressor.calibrate import LatencyPredictor
from compressor.profile import LatencyProfile
from compressor.pruning import Trajectory
from compressor.select import Candidate, Reference, TeacherTiming, Timer, time_candidate


@dataclass
class DerivedSearch:
    """Every trajectory step as a table row; ``chosen`` is the least pruned that qualifies."""

    rows: list[Candidate] = field(default_factory=list)
    chosen: str | None = None

    @property
    def fastest(self) -> Candidate | None:
        timed = [c for c in self.rows if c.at_percentile_ms is not None]
        return min(timed, key=lambda c: c.at_percentile_ms or 0.0) if timed else None


def search_trajectory(
    trajectory: Trajectory,
    profile: LatencyProfile,
    timer: Timer,
    teacher: Reference | TeacherTiming | None,
    *,
    to_shipped: Callable[[bytes], bytes] | None = None,
    predictor: LatencyPredictor | None = None,
    on_candidate: Callable[[Candidate], None] | None = None,
) -> DerivedSearch:
    """Bisect the trajectory (least pruned first) for the first step that qualifies.

    ``teacher`` is a :class:`~compressor.select.Reference` (paired timing against the teacher's
    graph) or a bare teacher timing (the single-timing arithmetic).
    """
    precision = "int8" if to_shipped is not None else "fp32"
    rows = [
        Candidate(
            name=p.name,
            params=p.params,
            mflops=p.mflops,
            precision=precision,
            source="pruned",
            macs_ratio=round(p.macs_ratio, 4),
        )
        for p in trajectory.points
    ]
    search = DerivedSearch(rows)
    if not rows:
        return search
    reference = teacher if isinstance(teacher, Reference) else Reference(teacher)

    def qualifies(index: int) -> bool:
        row = rows[index]
        if row.at_percentile_ms is None:
            model = trajectory.points[index].model
            time_candidate(row, model, profile, timer, to_shipped, predictor, reference)
            if on_candidate:
                on_candidate(row)
        return row.qualifies

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
