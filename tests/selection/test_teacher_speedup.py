"""Selection relates candidates to the teacher and judges them at the precision that ships.

Timings are constructed (a stub timer keyed by the graph's size), so these tests check the
decision, never the machine.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

from compressor.errors import CompressorError
from compressor.latency.profiles import load_profile
from compressor.latency.timing import TimingSettings, summarize
from compressor.models.registry import FAMILIES, build_model, count_flops, preferred_families
from compressor.selection.choose import select_student
from compressor.selection.sources import choose_student
from compressor.selection.table import TeacherTiming

LADDER = ("cifar_resnet8_w8", "cifar_resnet8_w16", "cifar_resnet14_w16", "cifar_resnet20_w16")
# the digits' shape: the graphs are the ones tests/selection/test_select.py exports
SHAPE = (1, 8, 8)


def _profile(**changes: object):
    base = load_profile("cpu-1thread")
    return dataclasses.replace(
        base, **{"latency_ms": 10.0, "safety_margin": 0.0, "input_shape": SHAPE, **changes}
    )


@functools.cache
def _graph_lengths() -> dict[str, int]:
    """The byte length of each LADDER graph. The models are built as :func:`_select` has
    selection build them (seed 0, ladder order), so selection's own exports of them are the
    same graphs and are not exported again (tests/conftest.py)."""
    from compressor.export import to_onnx as export

    torch.manual_seed(0)
    models = {name: build_model(name, 10, SHAPE[0]) for name in LADDER}
    return {name: len(export.onnx_bytes(model, SHAPE, 18)) for name, model in models.items()}


def _ladder_timer(ms: dict[str, float], shipped_scale: float = 1.0):
    """Candidate name -> ms, recognised by the length of its ONNX graph (weights are random,
    their byte count is not); graphs from ``to_shipped`` are marked with an ``INT8:`` prefix."""
    table = {_graph_lengths()[name]: value for name, value in ms.items()}

    def timer(graph: bytes, shape: tuple[int, int, int]):
        if graph.startswith(b"INT8:"):
            value = table[len(graph) - 5] * shipped_scale
        else:
            value = table[len(graph)]
        return summarize(np.full(20, value), 90.0, 1.0, TimingSettings())

    return timer


@pytest.fixture(scope="module")
def timings() -> dict[str, float]:
    return {"cifar_resnet8_w8": 1.0, "cifar_resnet8_w16": 2.0,
            "cifar_resnet14_w16": 3.0, "cifar_resnet20_w16": 4.0}  # fmt: skip


def _select(profile, timer, teacher_ms: float | None, **kw):
    teacher = TeacherTiming("t", 1, 1.0, teacher_ms) if teacher_ms is not None else None
    torch.manual_seed(0)  # the candidates' weights, as in _graph_lengths
    return select_student(profile, 10, "cifar_resnet", timer=timer, candidates=LADDER,
                          teacher=teacher, **kw)  # fmt: skip


def test_largest_candidate_faster_than_teacher_by_min_speedup(timings) -> None:
    timer = _ladder_timer(timings)
    sel = _select(_profile(min_speedup=1.5), timer, teacher_ms=4.5)
    # 4.5 / 3.0 = 1.5 qualifies exactly at the boundary; 4.5 / 4.0 = 1.125 does not
    assert sel.chosen == "cifar_resnet14_w16"
    rows = {c.name: c for c in sel.candidates}
    assert rows["cifar_resnet20_w16"].fits and rows["cifar_resnet20_w16"].faster is False
    assert rows["cifar_resnet14_w16"].speedup == 1.5 and rows["cifar_resnet14_w16"].faster
    assert sel.teacher is not None and sel.min_speedup == 1.5
    # without the teacher, the budget alone decides: the largest
    assert _select(_profile(min_speedup=1.5), timer, teacher_ms=None).chosen == "cifar_resnet20_w16"


def test_no_candidate_faster_than_teacher_names_both_latencies(timings) -> None:
    with pytest.raises(CompressorError) as err:
        _select(_profile(min_speedup=2.0), _ladder_timer(timings), teacher_ms=1.5)
    message = str(err.value)
    assert "no student is 2x faster than the teacher" in message
    assert "1.500 ms" in message and "cifar_resnet8_w8 1.000 ms" in message


def test_budget_failure_still_reported_as_budget(timings) -> None:
    with pytest.raises(CompressorError, match="no student fits the budget"):
        _select(_profile(latency_ms=0.5, min_speedup=1.0), _ladder_timer(timings), 100.0)


def test_int8_profiles_judge_the_shipped_graph(timings) -> None:
    """With int8 2.5x faster, a larger student fits a budget its fp32 graph would miss."""
    timer = _ladder_timer(timings, shipped_scale=0.4)
    profile = _profile(latency_ms=1.3, min_speedup=1.0)
    fp32 = _select(profile, timer, teacher_ms=None)
    int8 = _select(profile, timer, teacher_ms=None, to_shipped=lambda g: b"INT8:" + g)
    assert fp32.chosen == "cifar_resnet8_w8" and fp32.precision == "fp32"
    assert int8.chosen == "cifar_resnet14_w16" and int8.precision == "int8"
    row = int8.chosen_candidate
    assert row.at_percentile_ms == pytest.approx(1.2) and row.fp32_at_percentile_ms == 3.0


def test_choose_student_times_the_teacher_and_says_when_it_already_fits(timings) -> None:
    teacher = build_model("cifar_resnet20_w32", 10, SHAPE[0])
    base = _ladder_timer(timings)

    def timer(graph: bytes, shape: tuple[int, int, int]):
        try:
            return base(graph, shape)
        except KeyError:  # the teacher's graph
            return summarize(np.full(20, 5.0), 90.0, 1.0, TimingSettings())

    lines: list[str] = []
    torch.manual_seed(0)  # exporting and timing the teacher draws nothing: as _graph_lengths
    sel = choose_student(_profile(min_speedup=1.5), teacher, "cifar_resnet20_w32", 10,
                         ["cifar_resnet"], candidates=LADDER, timer=timer,
                         log=lines.append)  # fmt: skip
    assert sel.teacher is not None and sel.teacher.at_percentile_ms == 5.0
    assert sel.teacher.meets_budget is True
    assert sel.teacher.mflops == pytest.approx(count_flops(teacher, SHAPE) / 1e6, rel=1e-3)
    assert any("already meets the 10 ms budget" in line for line in lines)
    assert sel.chosen == "cifar_resnet14_w16"  # 5.0 / 3.0 >= 1.5, 5.0 / 4.0 < 1.5


def test_teacher_family_is_preferred_for_torchvision_teachers() -> None:
    assert preferred_families("resnet50", (224, 224)) == ["resnet", "torchvision_mix"]
    assert preferred_families("efficientnet_b3", (240, 240))[0] == "efficientnet"
    assert preferred_families("mobilenet_v3_small", (224, 224))[0] == "mobilenet_v3"
    assert preferred_families("my_custom_net", (224, 224)) == ["torchvision_mix"]
    assert preferred_families("resnet18", (32, 32)) == ["cifar_resnet"]


def test_default_224_ladder_spans_budgets_and_stays_below_a_resnet50() -> None:
    """The default 224-px ladder reaches from tens of MFLOPs to the size of a ResNet-50, so a
    15 ms budget is reachable with a model smaller than the teacher."""
    ladder = FAMILIES["torchvision_mix"].ladder
    flops = [count_flops(build_model(n, 10), (3, 224, 224)) / 1e6 for n in ladder]
    assert min(flops) < 100 and max(flops) > 3000
    assert "resnet18" in ladder and "efficientnet_b0" in ladder


def test_selection_round_trips_with_teacher(timings) -> None:
    from compressor.selection.table import Selection

    sel = _select(_profile(min_speedup=1.5), _ladder_timer(timings), teacher_ms=4.5)
    again = Selection.from_dict(sel.to_dict())
    assert again.teacher == sel.teacher and again.chosen == sel.chosen
    assert again.candidates[2].speedup == sel.candidates[2].speedup


def test_table_shows_the_teacher_first_and_each_speedup(timings) -> None:
    from compressor.selection.table import format_table

    sel = _select(_profile(min_speedup=1.5), _ladder_timer(timings), teacher_ms=4.5)
    sel.teacher = TeacherTiming("resnet18", 11_000_000, 1800.0, 4.5, 4.4, 4.5, True)
    head, teacher_row, *rows = format_table(sel).splitlines()
    assert head.split()[-3:] == ["speedup", "fits", "qualifies"]
    assert teacher_row.startswith("teacher resnet18") and "1.00x" in teacher_row
    assert rows[2].split()[-5:] == ["1.50x", "yes", "yes", "<-", "chosen"]
    assert rows[3].split()[-3:] == ["1.12x", "yes", "no"]
