"""Selection memory: an earlier run's choice is re-timed and kept while it holds (hysteresis).

Timings are constructed (the stand-in exporter of ``tests/selection/test_select.py`` names the
candidate, the timer returns that name's latency), so each case states exactly where the
remembered student stands against the target, the budget and ``min_speedup``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compressor.models.registry import build_model
from compressor.selection.memory import (
    PATH_ENV,
    SelectionMemory,
    decision_key,
    default_memory_path,
    model_fingerprint,
)
from compressor.selection.sources import choose_student
from compressor.selection.table import Candidate, still_holds
from compressor.selection.trajectory_search import search_trajectory
from tests.fakes import SMALL, SearchRow, budget_profile, timer_from

TEACHER = "cifar_resnet20_w32"
TEACHER_MODEL = build_model(TEACHER, 10, 1)  # one set of weights: the memory's key hashes them


def _choose(
    profile, latency: dict[str, float], memory: Path | None, calls: list[str] | None = None
):
    lines: list[str] = []
    selection = choose_student(
        profile, TEACHER_MODEL, TEACHER, 10, ["cifar_resnet"], candidates=SMALL,
        timer=timer_from(latency, calls), log=lines.append, memory_path=memory,
    )  # fmt: skip
    return selection, lines


@pytest.mark.usefixtures("named_export")
def test_a_remembered_choice_is_kept_while_it_holds_and_replaced_when_it_misses(
    tmp_path: Path,
) -> None:
    profile = budget_profile(tmp_path, 5.0)  # target 4.5 ms, budget 5 ms, no teacher speed bar hit
    memory = tmp_path / "mem" / "selections.json"
    first = {TEACHER: 40.0, **dict(zip(SMALL, (1.0, 2.0, 4.0, 4.8), strict=True))}
    chosen, _ = _choose(profile, first, memory)
    assert chosen.chosen == SMALL[2] and chosen.remembered["kept"] is False
    assert json.loads(memory.read_text())  # one entry written

    # the host drifted: SMALL[3] now meets the target, SMALL[2] is slower but within the budget
    drifted = {**first, SMALL[2]: 4.9, SMALL[3]: 4.4}
    assert _choose(profile, drifted, None)[0].chosen == SMALL[3]  # a fresh search would switch
    calls: list[str] = []
    kept, lines = _choose(profile, drifted, memory, calls)
    assert kept.chosen == SMALL[2] and kept.remembered["kept"] is True
    assert kept.remembered["prior"] == SMALL[2]
    assert calls[:3] == [TEACHER, TEACHER, SMALL[2]]  # the remembered one is timed first
    assert any(line.startswith(f"kept {SMALL[2]}, chosen on this host") for line in lines)

    # over the budget itself: the memory lets go, searches again and remembers the new choice
    missed = {**drifted, SMALL[2]: 5.2}
    again, lines = _choose(profile, missed, memory)
    assert again.chosen == SMALL[3] and again.remembered["kept"] is False
    assert any("no longer holds: searched again" in line for line in lines)
    assert _choose(profile, missed, memory)[0].remembered["kept"] is True  # now SMALL[3]'s


@pytest.mark.usefixtures("named_export")
def test_a_host_that_drifted_slower_is_measured_by_the_teacher_and_does_not_evict(
    tmp_path: Path,
) -> None:
    """The whole host 20% slower (the teacher too): the remembered student, over the budget as
    measured now, is judged at the decision's host speed and kept; a student that got slower
    on its own (teacher unchanged) is not."""
    profile = budget_profile(tmp_path, 5.0)
    memory = tmp_path / "mem" / "selections.json"
    first = {TEACHER: 40.0, **dict(zip(SMALL, (1.0, 2.0, 4.0, 4.8), strict=True))}
    assert _choose(profile, first, memory)[0].chosen == SMALL[2]
    assert json.loads(memory.read_text()).popitem()[1]["teacher_ms"] == 40.0
    slower = {name: ms * 1.2 for name, ms in first.items()}  # SMALL[2] at 4.8, SMALL[3] 5.76
    slower[SMALL[2]] = 5.6  # over the 5 ms budget now; 4.67 ms at the decision's host speed
    kept, lines = _choose(profile, slower, memory)
    assert kept.chosen == SMALL[2] and kept.remembered["kept"] is True
    assert any("teacher 48.000 ms now, 40.000 ms then" in line for line in lines)
    alone = {**first, SMALL[2]: 5.6}  # the teacher unchanged: the student itself is slower
    assert _choose(profile, alone, memory)[0].remembered["kept"] is False


def test_still_holds_judges_the_latency_at_the_decisions_host_speed(tmp_path: Path) -> None:
    profile = budget_profile(tmp_path, 5.0)
    cand = Candidate("c", 1, 1.0, at_percentile_ms=5.5, speed_verdict="above")
    assert still_holds(cand, profile) is False
    assert still_holds(cand, profile, host_scale=1.2) is True  # 4.58 ms at the old host speed
    assert still_holds(cand, profile, host_scale=0.8) is False  # a faster host relaxes nothing


@pytest.mark.usefixtures("named_export")
def test_without_a_memory_path_nothing_is_read_or_written(tmp_path: Path) -> None:
    latency = {TEACHER: 40.0, **dict(zip(SMALL, (1.0, 2.0, 4.0, 4.8), strict=True))}
    selection, _ = _choose(budget_profile(tmp_path, 5.0), latency, None)
    assert selection.remembered is None and not list(tmp_path.rglob("selections.json"))


def test_the_trajectory_search_keeps_a_holding_prior_with_one_timing() -> None:
    ms = [9.0, 7.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    rows = [SearchRow(f"s{i}") for i in range(len(ms))]
    timed: list[int] = []

    def time_step(i: int) -> None:
        timed.append(i)
        rows[i].at_percentile_ms, rows[i].fits = ms[i], ms[i] <= 4.5

    kept = search_trajectory(rows, time_step, prior=2, holds=lambda r: r.at_percentile_ms <= 5.0)
    assert kept.chosen == "s2" and kept.kept and timed == [2]

    rows = [SearchRow(f"s{i}") for i in range(len(ms))]
    timed.clear()
    dropped = search_trajectory(rows, time_step, prior=1, holds=lambda r: r.at_percentile_ms <= 5.0)
    assert dropped.chosen == "s3" and not dropped.kept and timed[0] == 1  # then a bisection


@pytest.mark.parametrize(
    ("ms", "verdict", "holds"),
    [
        (4.6, "above", True),  # between the target (4.5) and the budget (5): the band
        (5.0, "above", True),
        (5.01, "above", False),
        (3.0, "inconclusive", True),  # the interval straddles min_speedup: not clearly slower
        (3.0, "below", False),
        (3.0, "same architecture and width as the teacher", False),
        (None, None, False),
    ],
)
def test_still_holds_is_the_band_between_a_clear_pass_and_a_clear_miss(
    tmp_path: Path, ms: float | None, verdict: str | None, holds: bool
) -> None:
    cand = Candidate("c", 1, 1.0, at_percentile_ms=ms, speed_verdict=verdict)
    assert still_holds(cand, budget_profile(tmp_path, 5.0)) is holds


def test_the_key_changes_with_teacher_weights_profile_and_scope() -> None:
    model = build_model("cifar_resnet8_w8", 10, 1)
    base = decision_key(model_fingerprint(model), {"budget": 5}, {"source": "auto"})
    assert base == decision_key(model_fingerprint(model), {"budget": 5}, {"source": "auto"})
    with_other_weights = build_model("cifar_resnet8_w8", 10, 1)
    with_other_weights.fc.bias.data += 1
    assert (
        decision_key(model_fingerprint(with_other_weights), {"budget": 5}, {"source": "auto"})
        != base
    )
    assert decision_key(model_fingerprint(model), {"budget": 4}, {"source": "auto"}) != base
    assert decision_key(model_fingerprint(model), {"budget": 5}, {"source": "fresh"}) != base


def test_a_corrupt_or_unwritable_memory_never_fails_a_run(tmp_path: Path) -> None:
    corrupt = tmp_path / "selections.json"
    corrupt.write_text("{not json")
    memory = SelectionMemory(corrupt, "k")
    assert memory.recall() is None
    assert memory.remember("a", "fresh", 1.5, 2.0) is None
    assert memory.recall().chosen == "a"  # type: ignore[union-attr]

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    warning = SelectionMemory(blocked / "selections.json", "k").remember("a", "fresh", None, None)
    assert warning is not None and warning.startswith("warning: selection not remembered")


def test_the_memory_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PATH_ENV, "/ci/cache/sel.json")
    assert default_memory_path() == Path("/ci/cache/sel.json")
    monkeypatch.delenv(PATH_ENV)
    monkeypatch.setenv("COMPRESSOR_CACHE_DIR", "/x")
    assert default_memory_path() == Path("/x/selections.json")
