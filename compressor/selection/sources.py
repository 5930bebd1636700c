"""Which kind of student ships: one derived from the teacher (the pruning trajectory, searched
by measured latency) or a fresh one from a family's ladder, under ``--student-source``; and the
selection memory that keeps an earlier choice on the same host while it holds.

Each candidate is timed by :mod:`compressor.selection.choose`, exactly as a ladder candidate.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from compressor.errors import CompressorError, LatencyInconclusive
from compressor.latency.profiles import LatencyProfile
from compressor.models.pruning import SourcePlan
from compressor.selection.choose import (
    Reference,
    export_teacher,
    select_student,
    time_candidate,
    time_teacher,
)
from compressor.selection.memory import (
    Remembered,
    SelectionMemory,
    decision_key,
    model_fingerprint,
    remember_choice,
)
from compressor.selection.table import (
    Candidate,
    PairTimer,
    Selection,
    TeacherTiming,
    Timer,
    no_derived_message,
    still_holds,
)
from compressor.selection.target_calibration import host_predictor
from compressor.selection.timers import pair_from_timer, profile_pair_timer, profile_timer
from compressor.selection.trajectory_search import DerivedSearch, guess_step, search_trajectory


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
                f"the largest candidate at least {profile.min_speedup:g}x faster than it "
                f"(median at least {profile.target_speedup:.3g}x, the safety margin)"
            )
    scope = {
        "source": plan.source, "families": families, "candidates": candidates,
        "published_only": keep is not None, "precision": "int8" if to_shipped else "fp32",
        "trajectory": [p.name for p in plan.trajectory.points] if plan.trajectory else None,
        "target_speedup": profile.target_speedup,  # choices before the margin differ
    }  # fmt: skip
    memory = _open_memory(memory_path, teacher_model, profile, scope)
    prior = memory.recall() if memory is not None else None
    scale = host_scale(prior, teacher)
    derived = _search_derived(
        plan, profile, timer, reference, to_shipped, on_candidate, log,
        _remembered(prior, "pruned"), scale,
    )  # fmt: skip
    fresh: Selection | None = None
    failure: CompressorError | None = None
    if plan.fresh_allowed:
        fresh, failure = _first_fresh(
            profile, num_classes, families, timer, candidates, on_candidate, reference,
            to_shipped, log, keep, _remembered(prior, "fresh"), scale,
        )  # fmt: skip
    selection = _ship(plan, profile, teacher, derived, fresh, failure, to_shipped, say_source)
    if memory is not None:
        selection.remembered = remember_choice(memory, prior, selection, log)
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
            target_speedup=profile.target_speedup,
            precision="int8" if to_shipped is not None else "fp32",
            student_source="pruned",
            source_reason=reason,
        )
        say_source(f"student source: pruned ({reason})")
        return selection
    if plan.source == "pruned" or fresh is None:
        if plan.source == "pruned" or failure is None:
            raise CompressorError(no_derived_message(derived, profile, plan))
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


def _open_memory(
    path: Path | None, teacher_model: nn.Module, profile: LatencyProfile, scope: dict[str, Any]
) -> SelectionMemory | None:
    """The memory entry for this teacher, profile, candidate scope and host (None: no memory)."""
    if path is None:
        return None
    return SelectionMemory(path, decision_key(model_fingerprint(teacher_model), profile.to_dict(),
                                              scope))  # fmt: skip


def _remembered(prior: Remembered | None, source: str) -> str | None:
    """The remembered student's name when it is of this kind ("pruned" or "fresh")."""
    return prior.chosen if prior is not None and prior.source == source else None


def host_scale(prior: Remembered | None, teacher: TeacherTiming) -> float:
    """How much slower this host runs the teacher now than when ``prior`` was chosen (1.0 when
    either timing is missing): the teacher is the reference workload for the host's speed."""
    if prior is None or not prior.teacher_ms or teacher.at_percentile_ms is None:
        return 1.0
    return teacher.at_percentile_ms / prior.teacher_ms


def _search_derived(
    plan: SourcePlan,
    profile: LatencyProfile,
    timer: Timer,
    reference: Reference,
    to_shipped: Callable[[bytes], bytes] | None,
    on_candidate: Callable[[Candidate], None] | None,
    log: Callable[[str], None],
    prior: str | None = None,
    scale: float = 1.0,
) -> DerivedSearch | None:
    """The search along the trajectory (None when the plan has no derived students)."""
    if plan.trajectory is None:
        return None
    trajectory = plan.trajectory
    removed = len(trajectory.points[0].removed)
    copies = (
        f"copies of {trajectory.base_arch} without its {removed} squeeze-excitation blocks, "
        "unpruned and width-pruned"
        if removed
        else f"width-pruned copies of {trajectory.base_arch}"
    )
    log(
        f"derived students: {len(trajectory.points)} {copies} "
        f"({trajectory.points[-1].macs_ratio:.2f}x to "
        f"{trajectory.points[0].macs_ratio:.2f}x MACs), searched by measured latency"
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
    needed_ms = profile.target_ms
    if reference.teacher_ms is not None:
        needed_ms = min(needed_ms, reference.teacher_ms / profile.target_speedup)
    start = guess_step([p.macs_ratio for p in trajectory.points], reference.teacher_ms, needed_ms)
    return search_trajectory(
        rows, time_step, held, lambda row: still_holds(row, profile, scale), start
    )


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
    scale: float = 1.0,
) -> tuple[Selection | None, CompressorError | None]:
    """The first family with a qualifying candidate, or the last family's failure."""
    failure: CompressorError | None = None
    for index, family in enumerate(families):
        try:
            return select_student(
                profile, num_classes, family, timer=timer, candidates=candidates,
                on_candidate=on_candidate, teacher=reference.teacher, to_shipped=to_shipped,
                keep=keep, teacher_graph=reference.graph, pair_timer=reference.pair_timer,
                prior=prior, host_scale=scale,
            ), None  # fmt: skip
        except LatencyInconclusive:
            raise
        except CompressorError as exc:
            failure = exc
            if index + 1 < len(families):
                log(f"family {family}: {exc}; trying {families[index + 1]}")
    return None, failure
