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
from pathlib import Path
from typing import Any, NoReturn

from torch import nn

from compressor.errors import CompressorError, LatencyInconclusive
from compressor.export.to_onnx import onnx_bytes
from compressor.latency.cpu import CpuUse
from compressor.latency.paired import PairedTiming, measure_paired
from compressor.latency.profiles import LatencyProfile
from compressor.latency.timing import TimingSettings, measure_onnx
from compressor.models.pruning import SourcePlan
from compressor.models.registry import build_model, count_flops, count_params, get_family
from compressor.selection.memory import (
    Remembered,
    SelectionMemory,
    decision_key,
    model_fingerprint,
)
from compressor.selection.table import (
    SAME_AS_TEACHER,
    Candidate,
    PairTimer,
    Selection,
    TeacherTiming,
    Timer,
    same_as_teacher,
    still_holds,
)
from compressor.selection.target_calibration import LatencyPredictor, host_predictor
from compressor.selection.trajectory_search import DerivedSearch, search_trajectory


def profile_timer(profile: LatencyProfile) -> Timer:
    """The real timer: onnxruntime on CPU under the profile's settings."""
    settings = TimingSettings.from_profile(profile)
    return lambda model, shape: measure_onnx(model, shape, settings, profile.percentile)


def profile_pair_timer(profile: LatencyProfile) -> PairTimer:
    """The real paired timer: both graphs interleaved under the profile's settings."""
    settings = TimingSettings.from_profile(profile)

    def pair(ref: bytes, cand: bytes, shape: tuple[int, int, int], threshold: float | None):
        return measure_paired(ref, cand, shape, settings, profile.percentile, threshold=threshold)

    return pair


def pair_from_timer(timer: Timer) -> PairTimer:
    """A paired timer made of two single timings (constructed timings in tests): the ratio of
    the two, with no uncertainty."""

    def pair(ref: bytes, cand: bytes, shape: tuple[int, int, int], _threshold: float | None):
        ref_stats, cand_stats = timer(ref, shape), timer(cand, shape)
        ratio = round(ref_stats.at_percentile_ms / max(cand_stats.at_percentile_ms, 1e-9), 4)
        cpu = CpuUse(1.0, None, 1, 0.0)
        if ref_stats.contended or cand_stats.contended:
            cpu = CpuUse(0.0, None, 1, 0.0)
        return PairedTiming(ratio, ratio, ratio, 1.0, 1, ref_stats, cand_stats, cpu)

    return pair


def inconclusive(what: str, cpu: dict[str, object] | CpuUse | None, attempts: int) -> NoReturn:
    """Stop: a latency decision would rest on a contended measurement."""
    use = cpu.to_dict() if isinstance(cpu, CpuUse) else (cpu or {})
    raise LatencyInconclusive(
        f"latency decision inconclusive: the host was contended while timing {what} (the "
        f"process got {float(use.get('cpu_share', 0.0)):.0%} of the CPU time its "
        f"{use.get('threads', '?')} thread(s) asked for, after {attempts} attempt(s)); nothing "
        "was chosen: rerun when the host is idle"
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
    ``min_speedup``. A bare teacher latency (a float) keeps the single-timing arithmetic.
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
        cand.faster = cand.speed_verdict == "above"
    elif teacher_ms is not None:
        cand.speedup = round(teacher_ms / max(stats.at_percentile_ms, 1e-9), 3)
        cand.faster = teacher_ms >= profile.min_speedup * stats.at_percentile_ms
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
) -> Selection:
    """Choose the largest candidate (by FLOPs) that fits the budget and beats the teacher.

    A candidate qualifies when its latency at the profile's percentile is <= the target (the
    budget less the safety margin) and, when ``teacher`` was timed, the teacher is at least
    ``profile.min_speedup`` times slower. ``to_shipped`` turns a candidate's fp32 ONNX into the
    graph that would ship (int8 profiles), so candidates are judged at the shipped precision.
    ``candidates`` restricts the ladder to the given names. With ``teacher_graph`` the speedup
    is measured by ``pair_timer`` (the two graphs interleaved), else from the teacher's single
    timing. ``prior`` (a remembered choice) is timed first and kept while :func:`still_holds`.

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
    rows = []
    for name in ladder:
        model = build_model(name, num_classes, shape[0])
        rows.append((name, model, count_params(model), count_flops(model, shape) / 1e6))
    rows.sort(key=lambda r: r[3])
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
    if held is not None and still_holds(table[held], profile):
        chosen = table[held]
    else:
        qualifying = [c for c in table if c.qualifies]
        if not qualifying:
            raise CompressorError(
                _nothing_qualifies(table, profile, teacher, predictor is not None)
            )
        chosen = max(qualifying, key=lambda c: c.mflops)
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
        precision=precision,
    )


def choose_student(
    profile: LatencyProfile,
    teacher_model: nn.Module,
    teacher_arch: str,
    num_classes: int,
    families: list[str],
    *,
    candidates: tuple[str, ...] | None = None,
    on_candidate: Callable[[Candidate], None] | None = None,
    to_shipped: Callable[[bytes], bytes] | None = None,
    timer: Timer | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    plan: SourcePlan | None = None,
    keep: Callable[[str], bool] | None = None,
    pair_timer: PairTimer | None = None,
    memory_path: Path | None = None,
) -> Selection:
    """Time the teacher, then its derived (pruned) students, then the fresh families in order.

    A derived student that qualifies ships unless ``plan.source`` is "fresh"; the fresh ladder
    is still timed under "auto" so the table compares both kinds. Without a qualifying derived
    student, "auto" falls back to the first fresh family with a qualifying candidate (the
    teacher's own family comes first, see :func:`compressor.models.registry.preferred_families`).
    With ``memory_path`` an earlier run's choice under the same key is re-timed first and kept
    while it holds (:mod:`compressor.selection.memory`), and a new choice is remembered there.
    """
    say_source = log if plan is not None else (lambda _msg: None)  # a plan's choice is news
    plan = plan or SourcePlan("fresh")
    if pair_timer is None:
        pair_timer = pair_from_timer(timer) if timer is not None else profile_pair_timer(profile)
    timer = timer or profile_timer(profile)
    graph = export_teacher(teacher_model, profile)
    teacher = time_teacher(teacher_model, teacher_arch, profile, timer, graph)
    timed = isinstance(graph, bytes) and teacher.at_percentile_ms is not None
    reference = Reference(teacher, graph if timed else None, pair_timer)  # type: ignore[arg-type]
    pct = f"p{profile.percentile:g}"
    if teacher.at_percentile_ms is None:
        log(f"warning: teacher {teacher.note}; the speedup criterion is not applied")
    else:
        log(f"teacher {teacher_arch}: {teacher.at_percentile_ms:.3f} ms at {pct} (fp32)")
        if teacher.meets_budget:
            log(
                f"the teacher already meets the {profile.latency_ms:g} ms budget: compressing to "
                f"the largest candidate at least {profile.min_speedup:g}x faster than it"
            )
    scope = {
        "source": plan.source, "families": families, "candidates": candidates,
        "published_only": keep is not None, "precision": "int8" if to_shipped else "fp32",
        "trajectory": [p.name for p in plan.trajectory.points] if plan.trajectory else None,
    }  # fmt: skip
    memory = None
    if memory_path is not None:
        key = decision_key(model_fingerprint(teacher_model), profile.to_dict(), scope)
        memory = SelectionMemory(memory_path, key)
    prior = memory.recall() if memory is not None else None
    derived = _search_derived(
        plan, profile, timer, reference, to_shipped, on_candidate, log,
        prior.chosen if prior is not None and prior.source == "pruned" else None,
    )  # fmt: skip
    fresh: Selection | None = None
    failure: CompressorError | None = None
    if plan.fresh_allowed:
        fresh, failure = _first_fresh(
            profile, num_classes, families, timer, candidates, on_candidate, reference,
            to_shipped, log, keep, prior.chosen if prior is not None and prior.source == "fresh"
            else None,
        )  # fmt: skip
    selection = _ship(plan, profile, teacher, derived, fresh, failure, to_shipped, say_source)
    if memory is not None:
        selection.remembered = _remember(memory, prior, selection, log)
    return selection


def _ship(
    plan: SourcePlan,
    profile: LatencyProfile,
    teacher: TeacherTiming,
    derived: DerivedSearch | None,
    fresh: Selection | None,
    failure: CompressorError | None,
    to_shipped: Callable[[bytes], bytes] | None,
    say_source: Callable[[str], None],
) -> Selection:
    """The kind that ships (``plan.source``) and its selection, with every row timed."""
    rows = [*(derived.rows if derived else []), *(fresh.candidates if fresh else [])]
    if derived is not None and derived.chosen is not None:
        point = plan.trajectory.point(derived.chosen)
        reason = f"{plan.reason}; ships {point.description}"
        selection = Selection(
            family=f"pruned {plan.trajectory.base_arch}",
            chosen=derived.chosen,
            budget_ms=profile.latency_ms,
            target_ms=profile.target_ms,
            percentile=profile.percentile,
            candidates=rows,
            teacher=teacher,
            min_speedup=profile.min_speedup,
            precision="int8" if to_shipped is not None else "fp32",
            student_source="pruned",
            source_reason=reason,
        )
        say_source(f"student source: pruned ({reason})")
        return selection
    if plan.source == "pruned" or fresh is None:
        if plan.source == "pruned" or failure is None:
            raise CompressorError(_no_derived(derived, profile, plan))
        raise failure
    if derived is not None:
        fastest = derived.fastest
        why = "no derived student qualified"
        if fastest is not None:
            why += f" (the fastest, {fastest.name}, {fastest.at_percentile_ms:.3f} ms)"
        reason = f"{plan.reason}; {why}; ships the fresh ladder's choice"
    else:
        reason = plan.reason or "--student-source fresh"
    fresh.candidates = rows
    fresh.student_source, fresh.source_reason = "fresh", reason
    say_source(f"student source: fresh ({reason})")
    return fresh


def _remember(
    memory: SelectionMemory, prior: Remembered | None, selection: Selection, log: Any
) -> dict[str, Any]:
    """Log whether the remembered choice held, store a new one, and say so in the selection."""
    row = selection.chosen_candidate
    where = f"selection memory {memory.path}; --no-selection-memory searches afresh"
    if prior is not None and prior.chosen == selection.chosen:
        speed = f", {row.speedup:.2f}x the teacher" if row.speedup else ""
        log(f"kept {selection.chosen}, chosen on this host on {prior.decided_utc}: re-timed at "
            f"{row.at_percentile_ms:.3f} ms{speed}, it still holds ({where})")  # fmt: skip
    else:
        if prior is not None:
            log(f"the remembered choice {prior.chosen} ({prior.decided_utc}) no longer holds: "
                f"searched again ({where})")  # fmt: skip
        warning = memory.remember(
            selection.chosen, selection.student_source, row.speedup, row.at_percentile_ms
        )
        if warning:
            log(warning)
    return {
        "path": str(memory.path),
        "prior": prior.chosen if prior else None,
        "prior_decided_utc": prior.decided_utc if prior else None,
        "kept": prior is not None and prior.chosen == selection.chosen,
    }


def _search_derived(
    plan: SourcePlan,
    profile: LatencyProfile,
    timer: Timer,
    reference: Reference,
    to_shipped: Callable[[bytes], bytes] | None,
    on_candidate: Callable[[Candidate], None] | None,
    log: Callable[[str], None],
    prior: str | None = None,
) -> DerivedSearch | None:
    """The bisection along the trajectory (None when the plan has no derived students)."""
    if plan.trajectory is None:
        return None
    trajectory = plan.trajectory
    log(
        f"derived students: {len(trajectory.points)} width-pruned copies of "
        f"{trajectory.base_arch} ({trajectory.points[-1].macs_ratio:.2f}x to "
        f"{trajectory.points[0].macs_ratio:.2f}x MACs), bisected by measured latency"
    )
    predictor = None
    if profile.calibration is not None:
        predictor = host_predictor(profile.calibration, profile.input_shape, timer)
    precision = "int8" if to_shipped is not None else "fp32"
    rows = [
        Candidate(
            name=p.name, params=p.params, mflops=p.mflops, precision=precision, source="pruned",
            macs_ratio=round(p.macs_ratio, 4),
        )
        for p in trajectory.points
    ]  # fmt: skip

    def time_step(index: int) -> None:
        row, model = rows[index], trajectory.points[index].model
        time_candidate(row, model, profile, timer, to_shipped, predictor, reference)
        if on_candidate:
            on_candidate(row)

    names = [row.name for row in rows]
    held = names.index(prior) if prior in names else None
    return search_trajectory(rows, time_step, held, lambda row: still_holds(row, profile))


def _first_fresh(
    profile: LatencyProfile,
    num_classes: int,
    families: list[str],
    timer: Timer,
    candidates: tuple[str, ...] | None,
    on_candidate: Callable[[Candidate], None] | None,
    reference: Reference,
    to_shipped: Callable[[bytes], bytes] | None,
    log: Callable[[str], None],
    keep: Callable[[str], bool] | None,
    prior: str | None = None,
) -> tuple[Selection | None, CompressorError | None]:
    """The first family with a qualifying candidate, or the last family's failure."""
    failure: CompressorError | None = None
    for index, family in enumerate(families):
        try:
            return select_student(
                profile, num_classes, family, timer=timer, candidates=candidates,
                on_candidate=on_candidate, teacher=reference.teacher, to_shipped=to_shipped,
                keep=keep, teacher_graph=reference.graph, pair_timer=reference.pair_timer,
                prior=prior,
            ), None  # fmt: skip
        except LatencyInconclusive:
            raise
        except CompressorError as exc:
            failure = exc
            if index + 1 < len(families):
                log(f"family {family}: {exc}; trying {families[index + 1]}")
    return None, failure


def _no_derived(derived: Any, profile: LatencyProfile, plan: SourcePlan) -> str:
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


def _nothing_qualifies(
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
