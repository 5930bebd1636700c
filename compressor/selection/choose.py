"""Student-size selection: time each candidate's real ONNX graph and pick the largest that fits.

Candidates are built (random weights: latency does not depend on weight values for these
dense CNNs), exported through the same exporter as the final student, and timed through
:mod:`compressor.latency.timing` with the profile's settings. The ladder is walked cheapest first
and
the walk stops after ``patience`` consecutive candidates miss the target, so huge models are not
exported just to learn that they are too slow.

Whether a candidate is ``min_speedup`` faster than the teacher is a relative decision, so it is
made from the two graphs timed interleaved (:mod:`compressor.latency.paired`), with a confidence
interval on the ratio: a candidate qualifies only when the whole interval clears the bar, a
ratio inside its noise is marked "inconclusive", and a candidate with the teacher's own
architecture and width never qualifies. A timing on a contended host (after the back-off) stops
selection with :class:`~compressor.errors.LatencyInconclusive` instead of deciding on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from compressor.errors import CompressorError
from compressor.export.to_onnx import onnx_bytes
from compressor.latency.profiles import LatencyProfile
from compressor.models.registry import build_model, count_flops, count_params, get_family
from compressor.selection.table import (
    SAME_AS_TEACHER,
    Candidate,
    PairTimer,
    Selection,
    TeacherTiming,
    Timer,
    nothing_qualifies,
    same_as_teacher,
    still_holds,
)
from compressor.selection.target_calibration import LatencyPredictor, host_predictor
from compressor.selection.timers import (
    inconclusive,
    pair_from_timer,
    profile_timer,
)


def export_teacher(model: nn.Module, profile: LatencyProfile) -> bytes | CompressorError:
    """The teacher's ONNX graph at the profile's shape, or why it cannot be exported."""
    try:
        return onnx_bytes(model, profile.input_shape, profile.opset)
    except CompressorError as exc:
        return exc


def time_teacher(
    model: nn.Module,
    arch: str,
    profile: LatencyProfile,
    timer: Timer | None = None,
    graph: bytes | CompressorError | None = None,
) -> TeacherTiming:
    """Export the teacher (unless ``graph`` is given) and time it as the candidates are timed.

    A teacher that cannot be exported to ONNX (some TorchScript files) is returned untimed,
    with the reason, and the speedup criterion is then not applied.
    """
    timer = timer or profile_timer(profile)
    shape = profile.input_shape
    params, mflops = count_params(model), round(count_flops(model, shape) / 1e6, 3)
    graph = export_teacher(model, profile) if graph is None else graph
    if isinstance(graph, CompressorError):
        return TeacherTiming(arch, params, mflops, None, note=f"not timed: {graph}")
    try:
        stats = timer(graph, shape)
    except CompressorError as exc:
        return TeacherTiming(arch, params, mflops, None, note=f"not timed: {exc}")
    if stats.contended:
        inconclusive(f"the teacher {arch}", stats.cpu, stats.attempts)
    return TeacherTiming(
        arch,
        params,
        mflops,
        round(stats.at_percentile_ms, 4),
        round(stats.p50_ms, 4),
        round(stats.p90_ms, 4),
        meets_budget=stats.at_percentile_ms <= profile.latency_ms,
    )


def _restricted_ladder(
    family: str, candidates: tuple[str, ...] | None, keep: Callable[[str], bool] | None = None
) -> tuple[str, ...]:
    """The family's ladder, restricted to ``candidates`` (each must be on it) when given, and
    to the names ``keep`` accepts (e.g. those with published weights)."""
    ladder = get_family(family).ladder
    if keep is not None:
        ladder = tuple(name for name in ladder if keep(name))
        if not ladder:
            raise CompressorError(f"no candidate of family {family} has published weights")
    if not candidates:
        return ladder
    unknown = [c for c in candidates if c not in ladder]
    if unknown:
        raise CompressorError(
            f"candidate(s) {', '.join(unknown)} not in family {family}: {', '.join(ladder)}"
        )
    return tuple(c for c in ladder if c in candidates)


@dataclass(frozen=True)
class Reference:
    """What candidates are compared with: the teacher's timing and, for paired timing, its
    graph and the paired timer (no graph: the single timing's arithmetic is used)."""

    teacher: TeacherTiming | None
    graph: bytes | None = None
    pair_timer: PairTimer | None = None

    @property
    def teacher_ms(self) -> float | None:
        return self.teacher.at_percentile_ms if self.teacher else None


def time_candidate(
    cand: Candidate,
    model: nn.Module,
    profile: LatencyProfile,
    timer: Timer,
    to_shipped: Callable[[bytes], bytes] | None,
    predictor: LatencyPredictor | None,
    reference: Reference | float | None,
) -> None:
    """Time one candidate as it would ship and record whether it fits and beats the teacher.

    With the teacher's graph and a paired timer in ``reference`` the speedup comes from the two
    graphs timed interleaved, and the candidate qualifies only when its interval clears
    ``min_speedup`` and its median clears ``target_speedup`` (the bar with the profile's safety
    margin). A bare teacher latency (a float) keeps the single-timing arithmetic, against
    ``target_speedup``.
    """
    if not isinstance(reference, Reference):
        teacher_ms = reference
        reference = Reference(None)
    else:
        teacher_ms = reference.teacher_ms
    shape = profile.input_shape
    graph = onnx_bytes(model, shape, profile.opset)
    if to_shipped is not None:
        fp32 = timer(graph, shape)
        if fp32.contended:
            inconclusive(f"{cand.name} (fp32)", fp32.cpu, fp32.attempts)
        cand.fp32_at_percentile_ms = round(fp32.at_percentile_ms, 4)
        graph = to_shipped(graph)
    paired = None
    if reference.graph is not None and reference.pair_timer is not None:
        paired = reference.pair_timer(reference.graph, graph, shape, profile.min_speedup)
        if paired.contended:
            inconclusive(f"{cand.name} against the teacher", paired.cpu, paired.attempts)
        stats = paired.candidate
    else:
        stats = timer(graph, shape)
        if stats.contended:
            inconclusive(cand.name, stats.cpu, stats.attempts)
    cand.p50_ms, cand.p90_ms = round(stats.p50_ms, 4), round(stats.p90_ms, 4)
    cand.at_percentile_ms = round(stats.at_percentile_ms, 4)
    judged = stats.at_percentile_ms
    if predictor is not None:
        judged = predictor.predict(stats.at_percentile_ms, cand.mflops)
        cand.predicted_ms = round(judged, 4)
    cand.fits = judged <= profile.target_ms
    if paired is not None:
        cand.speedup = round(paired.ratio, 3)
        cand.speedup_ci = [paired.ci_low, paired.ci_high]
        cand.rounds = paired.rounds
        cand.speed_verdict = paired.verdict(profile.min_speedup)
        cand.faster = cand.speed_verdict == "above" and paired.ratio >= profile.target_speedup
    elif teacher_ms is not None:
        cand.speedup = round(teacher_ms / max(stats.at_percentile_ms, 1e-9), 3)
        cand.faster = teacher_ms >= profile.target_speedup * stats.at_percentile_ms
        cand.speed_verdict = "above" if cand.faster else "below"
    if same_as_teacher(cand, reference.teacher):
        cand.faster, cand.speed_verdict = False, SAME_AS_TEACHER


def select_student(
    profile: LatencyProfile,
    num_classes: int,
    family: str,
    *,
    timer: Timer | None = None,
    candidates: tuple[str, ...] | None = None,
    patience: int = 2,
    on_candidate: Callable[[Candidate], None] | None = None,
    teacher: TeacherTiming | None = None,
    to_shipped: Callable[[bytes], bytes] | None = None,
    keep: Callable[[str], bool] | None = None,
    teacher_graph: bytes | None = None,
    pair_timer: PairTimer | None = None,
    prior: str | None = None,
    host_scale: float = 1.0,
) -> Selection:
    """Choose the largest candidate (by FLOPs) that fits the budget and beats the teacher.

    A candidate qualifies when its latency at the profile's percentile is <= the target (the
    budget less the safety margin) and, when ``teacher`` was timed, the teacher is at least
    ``profile.min_speedup`` times slower. ``to_shipped`` turns a candidate's fp32 ONNX into the
    graph that would ship (int8 profiles), so candidates are judged at the shipped precision.
    ``candidates`` restricts the ladder to the given names. With ``teacher_graph`` the speedup
    is measured by ``pair_timer`` (the two graphs interleaved), else from the teacher's single
    timing. ``prior`` (a remembered choice) is timed first and kept while :func:`still_holds`
    (``host_scale``: see there).

    Raises:
        CompressorError: no candidate fits, or none is fast enough against the teacher (the
            message names the teacher's latency and the fastest candidate's).
    """
    timer = timer or profile_timer(profile)
    ladder = _restricted_ladder(family, candidates, keep)
    shape = profile.input_shape
    predictor = None
    if profile.calibration is not None:
        predictor = host_predictor(profile.calibration, shape, timer)
    pair_timer = pair_timer or (pair_from_timer(timer) if teacher_graph is not None else None)
    reference = Reference(teacher, teacher_graph, pair_timer)
    rows = _ladder_rows(ladder, num_classes, shape)
    precision = "int8" if to_shipped is not None else "fp32"
    table = [
        Candidate(name=n, params=p, mflops=round(f, 3), precision=precision) for n, _, p, f in rows
    ]

    def time_row(index: int) -> None:
        time_candidate(
            table[index], rows[index][1], profile, timer, to_shipped, predictor, reference
        )
        if on_candidate:
            on_candidate(table[index])

    held = next((i for i, c in enumerate(table) if c.name == prior), None)
    if held is not None:
        time_row(held)
    misses = 0
    for index, cand in enumerate(table):
        if misses >= patience:
            break
        if cand.at_percentile_ms is None:
            time_row(index)
        misses = 0 if cand.qualifies else misses + 1
    chosen = _pick(table, held, profile, teacher, predictor is not None, host_scale)
    return Selection(
        family=family,
        chosen=chosen.name,
        budget_ms=profile.latency_ms,
        target_ms=profile.target_ms,
        percentile=profile.percentile,
        candidates=table,
        calibrated_for=profile.calibration.device if profile.calibration else None,
        predictor=predictor,
        teacher=teacher,
        min_speedup=profile.min_speedup,
        target_speedup=profile.target_speedup,
        precision=precision,
    )


def _ladder_rows(
    ladder: list[str], num_classes: int, shape: tuple[int, int, int]
) -> list[tuple[str, nn.Module, int, float]]:
    """(name, random-weight model, params, MFLOPs) per candidate, cheapest first."""
    rows = []
    for name in ladder:
        model = build_model(name, num_classes, shape[0])
        rows.append((name, model, count_params(model), count_flops(model, shape) / 1e6))
    return sorted(rows, key=lambda r: r[3])


def _pick(
    table: list[Candidate],
    held: int | None,
    profile: LatencyProfile,
    teacher: TeacherTiming | None,
    calibrated: bool,
    host_scale: float = 1.0,
) -> Candidate:
    """The remembered row while it still holds, else the largest qualifying one."""
    if held is not None and still_holds(table[held], profile, host_scale):
        return table[held]
    qualifying = [c for c in table if c.qualifies]
    if not qualifying:
        raise CompressorError(nothing_qualifies(table, profile, teacher, calibrated))
    return max(qualifying, key=lambda c: c.mflops)
