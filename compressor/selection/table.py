"""The selection table: each candidate's measured row, the teacher's, and the choice.

Plain records (``selection.json`` round-trips through :meth:`Selection.to_dict` /
:meth:`Selection.from_dict`), the rules that judge one row against the teacher and the budget,
and the table as terminal text. The timing that fills the rows is in
:mod:`compressor.selection.choose`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from compressor.latency.paired import PairedTiming
from compressor.latency.profiles import LatencyProfile
from compressor.latency.timing import LatencyStats
from compressor.selection.target_calibration import LatencyPredictor

if TYPE_CHECKING:
    from compressor.models.pruning import SourcePlan

Timer = Callable[[bytes, tuple[int, int, int]], LatencyStats]
# (teacher graph, candidate graph, shape, threshold) -> the two timed interleaved
PairTimer = Callable[[bytes, bytes, tuple[int, int, int], float | None], PairedTiming]
SAME_AS_TEACHER = "same architecture and width as the teacher"


@dataclass
class Candidate:
    """One row of the selection table."""

    name: str
    params: int
    mflops: float
    p50_ms: float | None = None
    p90_ms: float | None = None
    at_percentile_ms: float | None = None
    predicted_ms: float | None = None  # predicted target latency (calibrated profiles only)
    fits: bool | None = None  # within the budget's target; None: not timed (the walk stopped)
    speedup: float | None = None  # teacher / candidate at the percentile (None: teacher untimed)
    faster: bool | None = None  # speedup >= the profile's min_speedup (None: not judged)
    precision: str = "fp32"  # the precision timed: the one that ships ("int8" profiles)
    fp32_at_percentile_ms: float | None = None  # int8 profiles: the fp32 graph, for reference
    source: str = "fresh"  # "fresh": a ladder architecture; "pruned": derived from the teacher
    macs_ratio: float | None = None  # pruned: MACs relative to the teacher
    speedup_ci: list[float] | None = None  # the speedup's confidence interval (paired timing)
    speed_verdict: str | None = None  # "above" / "below" / "inconclusive" min_speedup, or why not
    rounds: int | None = None  # interleaved rounds behind the speedup

    @property
    def qualifies(self) -> bool:
        """Fits the budget and is faster than the teacher by the required factor."""
        return bool(self.fits) and self.faster is not False


@dataclass(frozen=True)
class TeacherTiming:
    """The teacher's ONNX graph timed like the candidates (fp32, the profile's settings)."""

    arch: str
    params: int
    mflops: float
    at_percentile_ms: float | None  # None: the teacher could not be exported to ONNX
    p50_ms: float | None = None
    p90_ms: float | None = None
    meets_budget: bool | None = None
    note: str = ""  # why it was not timed


@dataclass
class Selection:
    """The outcome of selection: the chosen arch and every candidate considered."""

    family: str
    chosen: str
    budget_ms: float
    target_ms: float
    percentile: float
    candidates: list[Candidate] = field(default_factory=list)
    calibrated_for: str | None = None  # target device name when latencies are predicted
    predictor: LatencyPredictor | None = None  # host -> target, measured during selection
    teacher: TeacherTiming | None = None  # the teacher under the same settings
    min_speedup: float = 1.0
    target_speedup: float | None = None  # min_speedup with the safety margin (the median's bar)
    precision: str = "fp32"
    student_source: str = "fresh"  # what ships: "fresh" (ladder) or "pruned" (from the teacher)
    source_reason: str = ""  # why that kind (the --student-source rule, in one line)
    derived: dict[str, Any] | None = None  # pruned: description, ratios, accuracy before training
    remembered: dict[str, Any] | None = None  # the earlier run's choice on this host, if any

    def predict(self, host_ms: float, mflops: float) -> float | None:
        """Predicted target latency for a host measurement (None when not calibrated)."""
        return self.predictor.predict(host_ms, mflops) if self.predictor else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "chosen": self.chosen,
            "budget_ms": self.budget_ms,
            "target_ms": self.target_ms,
            "percentile": self.percentile,
            "candidates": [{**asdict(c), "qualifies": c.qualifies} for c in self.candidates],
            "calibrated_for": self.calibrated_for,
            "predictor": asdict(self.predictor) if self.predictor else None,
            "teacher": asdict(self.teacher) if self.teacher else None,
            "min_speedup": self.min_speedup,
            "target_speedup": self.target_speedup,
            "precision": self.precision,
            "student_source": self.student_source,
            "source_reason": self.source_reason,
            "derived": self.derived,
            "remembered": self.remembered,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Selection:
        rows = [
            Candidate(**{k: v for k, v in row.items() if k != "qualifies"})
            for row in data["candidates"]
        ]
        pred = data.get("predictor")
        predictor = LatencyPredictor(tuple(pred["mflops"]), tuple(pred["ratios"])) if pred else None
        teacher = TeacherTiming(**data["teacher"]) if data.get("teacher") else None
        return cls(**{**data, "candidates": rows, "predictor": predictor, "teacher": teacher})

    @property
    def chosen_candidate(self) -> Candidate:
        """The chosen row of the table (always one of ``candidates``)."""
        return next(c for c in self.candidates if c.name == self.chosen)


def same_as_teacher(cand: Candidate, teacher: TeacherTiming | None) -> bool:
    """The candidate is the teacher's own architecture and width (same params and FLOPs)."""
    return teacher is not None and cand.params == teacher.params and cand.mflops == teacher.mflops


def still_holds(cand: Candidate, profile: LatencyProfile, host_scale: float = 1.0) -> bool:
    """A remembered choice stays while it is not clearly worse (:mod:`compressor.selection.memory`):
    within the budget itself, not only its target, and its speedup interval not wholly below
    the bar. ``host_scale`` is how much slower the host runs the teacher now than when the
    choice was made (the teacher is re-timed in the same window): the latency is also judged
    at the decision's host speed, so a host that drifted slower does not evict a choice that a
    paired comparison still supports."""
    judged = cand.predicted_ms if cand.predicted_ms is not None else cand.at_percentile_ms
    if judged is None or min(judged, judged / max(host_scale, 1e-9)) > profile.latency_ms:
        return False
    return cand.speed_verdict in (None, "above", "inconclusive")


def format_table(selection: Selection) -> str:
    """The candidate table as aligned text (for the terminal), the teacher's row first."""
    predicted = selection.calibrated_for is not None

    def ms(v: float | None) -> str:
        return f"{v:10.3f}" if v is not None else f"{'-':>10}"

    t = selection.teacher
    width = max([24, *(len(c.name) + 1 for c in selection.candidates)])
    width = max(width, len(f"teacher {t.arch}") + 1) if t is not None else width
    head = f"{'candidate':<{width}}{'params':>10}{'MFLOPs':>10}{'p50 ms':>10}{'p90 ms':>10}"
    head += f"{'target ms':>11}" if predicted else ""
    lines = [head + f"{'speedup':>9}  fits  qualifies"]
    if t is not None:
        budget = "-" if t.meets_budget is None else ("yes" if t.meets_budget else "no")
        lines.append(
            f"{'teacher ' + t.arch:<{width}}{t.params:>10,}{t.mflops:>10.1f}{ms(t.p50_ms)}"
            f"{ms(t.p90_ms)}" + (f" {ms(None)}" if predicted else "") + f"{'1.00x':>9}  {budget}"
        )
    for c in selection.candidates:
        fits = "-" if c.fits is None else ("yes" if c.fits else "no")
        ok = "-" if c.fits is None else ("yes" if c.qualifies else "no")
        speedup = "-" if c.speedup is None else f"{c.speedup:.2f}x"
        mark = "  <- chosen" if c.name == selection.chosen else ""
        if mark and not c.qualifies and (selection.remembered or {}).get("kept"):
            mark += " (remembered: still within the budget and not clearly slower)"
        lines.append(
            f"{c.name:<{width}}{c.params:>10,}{c.mflops:>10.1f}"
            f"{ms(c.p50_ms)}{ms(c.p90_ms)}"
            + (f" {ms(c.predicted_ms)}" if predicted else "")
            + f"{speedup:>9}  {fits:<4}  {ok}{mark}"
        )
    return "\n".join(lines)


def no_derived_message(derived: Any, profile: LatencyProfile, plan: SourcePlan) -> str:
    """One line: no derived student qualifies, with the fastest one found."""
    if derived is None or derived.fastest is None:
        return f"no derived student: {plan.reason}"
    fastest = derived.fastest
    speed = f", {fastest.speedup:.2f}x faster than the teacher" if fastest.speedup else ""
    return (
        f"no derived student qualifies: the fastest, {fastest.name} (the most pruned step, "
        f"{fastest.params:,} params), takes {fastest.at_percentile_ms:.3f} ms at "
        f"p{profile.percentile:g}{speed}; the target is {profile.target_ms:.3f} ms and "
        f"{profile.min_speedup:g}x. Pruning further would remove whole layers: raise the "
        "budget, or use --student-source fresh"
    )


def nothing_qualifies(
    table: list[Candidate], profile: LatencyProfile, teacher: TeacherTiming | None, predicted: bool
) -> str:
    """One line saying why no candidate qualified: the budget, or the teacher's speed."""

    def judged_ms(c: Candidate) -> float:
        return (c.predicted_ms if c.predicted_ms is not None else c.at_percentile_ms) or 0.0

    timed = [c for c in table if c.at_percentile_ms is not None]
    fastest = min(timed, key=lambda c: c.at_percentile_ms or 0.0)
    pct = f"p{profile.percentile:g}"
    if any(c.fits for c in timed) and teacher is not None and teacher.at_percentile_ms:
        return (
            f"no student is {profile.min_speedup:g}x faster than the teacher: the teacher "
            f"{teacher.arch} takes {teacher.at_percentile_ms:.3f} ms at {pct} under the profile's "
            f"settings, the fastest candidate {fastest.name} {fastest.at_percentile_ms:.3f} ms "
            f"({fastest.speedup:.2f}x); lower budget.min_speedup in the profile or choose another "
            "--family / --candidates"
        )
    where = " (predicted on the target)" if predicted else ""
    return (
        f"no student fits the budget: the fastest candidate {fastest.name} takes "
        f"{judged_ms(fastest):.3f} ms{where} at {pct}, the budget is "
        f"{profile.latency_ms:g} ms ({profile.target_ms:.3f} ms after the "
        f"{profile.safety_margin:.0%} safety margin)"
    )
