"""Student-size selection: time each candidate's real ONNX graph and pick the largest that fits.

Candidates are built (random weights: latency does not depend on weight values for these
dense CNNs), exported through the same exporter as the final student, and timed through
:mod:`compressor.latency` with the profile's settings. The ladder is walked cheapest first and
the walk stops after ``patience`` consecutive candidates miss the target, so huge models are not
exported just to learn that they are too slow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from compressor.calibrate import LatencyPredictor, host_predictor
from compressor.errors import CompressorError
from compressor.export import onnx_bytes
from compressor.latency import LatencyStats, TimingSettings, measure_onnx
from compressor.profile import LatencyProfile
from compressor.students import build_model, count_flops, count_params, get_family

Timer = Callable[[bytes, tuple[int, int, int]], LatencyStats]


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
    fits: bool | None = None  # None: not timed (the walk stopped before it)


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
            "candidates": [asdict(c) for c in self.candidates],
            "calibrated_for": self.calibrated_for,
            "predictor": asdict(self.predictor) if self.predictor else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Selection:
        rows = [Candidate(**row) for row in data["candidates"]]
        pred = data.get("predictor")
        predictor = LatencyPredictor(tuple(pred["mflops"]), tuple(pred["ratios"])) if pred else None
        return cls(**{**data, "candidates": rows, "predictor": predictor})


def profile_timer(profile: LatencyProfile) -> Timer:
    """The real timer: onnxruntime on CPU under the profile's settings."""
    settings = TimingSettings.from_profile(profile)
    return lambda model, shape: measure_onnx(model, shape, settings, profile.percentile)


def select_student(
    profile: LatencyProfile,
    num_classes: int,
    family: str,
    *,
    timer: Timer | None = None,
    candidates: tuple[str, ...] | None = None,
    patience: int = 2,
    on_candidate: Callable[[Candidate], None] | None = None,
) -> Selection:
    """Choose the largest candidate (by FLOPs) whose latency at the percentile is <= target.

    ``candidates`` restricts the ladder to the given names (for example the architectures a
    deployment runtime supports, or one fixed student whose fit should just be checked).

    Raises:
        CompressorError: no candidate fits (the message names the fastest one's latency).
    """
    timer = timer or profile_timer(profile)
    ladder = get_family(family).ladder
    if candidates:
        unknown = [c for c in candidates if c not in ladder]
        if unknown:
            raise CompressorError(
                f"candidate(s) {', '.join(unknown)} not in family {family}: {', '.join(ladder)}"
            )
        ladder = tuple(c for c in ladder if c in candidates)
    shape = profile.input_shape
    predictor = None
    if profile.calibration is not None:
        predictor = host_predictor(profile.calibration, shape, timer)
    rows = []
    for name in ladder:
        model = build_model(name, num_classes, shape[0])
        rows.append((name, model, count_params(model), count_flops(model, shape) / 1e6))
    rows.sort(key=lambda r: r[3])
    table = [Candidate(name=n, params=p, mflops=round(f, 3)) for n, _, p, f in rows]
    misses = 0
    for (_, model, _, _), cand in zip(rows, table, strict=True):
        if misses >= patience:
            break
        stats = timer(onnx_bytes(model, shape, profile.opset), shape)
        cand.p50_ms, cand.p90_ms = round(stats.p50_ms, 4), round(stats.p90_ms, 4)
        cand.at_percentile_ms = round(stats.at_percentile_ms, 4)
        judged = stats.at_percentile_ms
        if predictor is not None:
            judged = predictor.predict(stats.at_percentile_ms, cand.mflops)
            cand.predicted_ms = round(judged, 4)
        cand.fits = judged <= profile.target_ms
        misses = 0 if cand.fits else misses + 1
        if on_candidate:
            on_candidate(cand)
    fitting = [c for c in table if c.fits]
    if not fitting:

        def judged_ms(c: Candidate) -> float:
            return (c.predicted_ms if c.predicted_ms is not None else c.at_percentile_ms) or 0.0

        fastest = min((c for c in table if c.at_percentile_ms is not None), key=judged_ms)
        where = " (predicted on the target)" if predictor is not None else ""
        raise CompressorError(
            f"no student fits the budget: the fastest candidate {fastest.name} takes "
            f"{judged_ms(fastest):.3f} ms{where} at p{profile.percentile:g}, the budget is "
            f"{profile.latency_ms:g} ms ({profile.target_ms:.3f} ms after the "
            f"{profile.safety_margin:.0%} safety margin)"
        )
    chosen = max(fitting, key=lambda c: c.mflops)
    return Selection(
        family=family,
        chosen=chosen.name,
        budget_ms=profile.latency_ms,
        target_ms=profile.target_ms,
        percentile=profile.percentile,
        candidates=table,
        calibrated_for=profile.calibration.device if profile.calibration else None,
        predictor=predictor,
    )


def format_table(selection: Selection) -> str:
    """The candidate table as aligned text (for the terminal)."""
    predicted = selection.calibrated_for is not None
    head = f"{'candidate':<24}{'params':>10}{'MFLOPs':>10}{'p50 ms':>10}{'p90 ms':>10}"
    head += f"{'target ms':>11}  fits" if predicted else "  fits"
    lines = [head]
    for c in selection.candidates:

        def ms(v: float | None) -> str:
            return f"{v:10.3f}" if v is not None else f"{'-':>10}"

        fits = "-" if c.fits is None else ("yes" if c.fits else "no")
        mark = "  <- chosen" if c.name == selection.chosen else ""
        lines.append(
            f"{c.name:<24}{c.params:>10,}{c.mflops:>10.1f}"
            f"{ms(c.p50_ms)}{ms(c.p90_ms)}"
            + (f" {ms(c.predicted_ms)}" if predicted else "")
            + f"  {fits}{mark}"
        )
    return "\n".join(lines)
