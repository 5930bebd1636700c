"""The typed hand-over between stages: one field per stage, int8's ship decision in one place."""

from __future__ import annotations

import pytest

from compressor.pipeline.results import Int8Result, SpeedupResult, StageResults, required
from compressor.pipeline.stages import STAGES


def test_every_stage_has_a_result_field_and_unknown_names_are_refused() -> None:
    results = StageResults()
    for stage in STAGES:
        results.store(stage.name, None)  # a field per stage: the runner can store every result
    with pytest.raises(KeyError, match="no result field for stage 'prune'"):
        results.store("prune", object())


def test_int8_ships_only_when_its_decision_says_so() -> None:
    def int8(use: bool) -> Int8Result:
        return Int8Result(quantize={}, verify={}, decision={"use_int8": use}, paired_latency={})

    results = StageResults()
    assert results.ships_int8 is False  # not an int8 profile
    results.store("int8", int8(False))
    assert results.ships_int8 is False
    results.store("int8", int8(True))
    assert results.ships_int8 is True and results.int8 is not None
    assert results.int8.to_dict()["decision"] == {"use_int8": True}


def test_an_unmeasured_speedup_keeps_report_json_short() -> None:
    assert SpeedupResult(measured=False, note="no export").to_dict() == {
        "measured": False,
        "note": "no export",
    }
    measured = SpeedupResult(measured=True, speedup=1.8, ci_low=1.6, ci_high=2.0).to_dict()
    assert measured["speedup"] == 1.8 and "note" not in measured and measured["measured"]


def test_a_missing_upstream_result_names_the_stage() -> None:
    assert required(3, "select") == 3
    with pytest.raises(RuntimeError, match="'select' stage has no result"):
        required(None, "select")
