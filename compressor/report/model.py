"""The run's report as one typed object, and the gates that decide its verdict.

It is built once from the stages' results by :mod:`compressor.pipeline.report_builder`.

:class:`Report` holds report.json's sections (keys documented in docs/report.md); its verdict
(``passed``, ``exit_code``, ``failed_gates``) comes from one function, :func:`verdict`, over the
gates that judge the shipped model. ``to_dict`` gives report.json, which the Markdown and HTML
renderers (:mod:`compressor.report.markdown`, :mod:`compressor.report.html_page`) read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from compressor.export.verify import VerifyReport, gate_exit_code, make_gate

Gate = dict[str, Any]


def verdict(gates: list[Gate]) -> tuple[bool, int, list[str]]:
    """``(passed, exit_code, failed gate names)``: a run passes when every gate does; exit code
    1 when a gate failed, 3 when none failed but one was inconclusive (contended host)."""
    failed = [gate["name"] for gate in gates if not gate["passed"] and not gate.get("inconclusive")]
    passed = all(gate["passed"] for gate in gates)
    return passed, gate_exit_code(gates), failed


@dataclass
class Report:
    """report.json as an object; the section order here is report.json's key order."""

    gates: list[Gate]
    teacher: dict[str, Any]
    profile: dict[str, Any]
    data: dict[str, Any]
    selection: dict[str, Any]
    distillation: dict[str, Any]
    bias: dict[str, Any]
    accuracy: dict[str, Any]
    parity: dict[str, Any]
    latency: dict[str, Any]
    size: dict[str, Any]
    export: dict[str, Any]
    artifacts: dict[str, str]
    provenance: dict[str, Any]
    warnings: list[str]
    int8: dict[str, Any] | None
    shipped: dict[str, Any]
    speedup: dict[str, Any]
    resumed: dict[str, Any] | None

    @property
    def passed(self) -> bool:
        return verdict(self.gates)[0]

    @property
    def exit_code(self) -> int:
        return verdict(self.gates)[1]

    def to_dict(self) -> dict[str, Any]:
        passed, exit_code, failed = verdict(self.gates)
        sections = asdict(self)
        gates = sections.pop("gates")
        int8 = sections.pop("int8")
        tail = {key: sections.pop(key) for key in ("shipped", "speedup", "resumed")}
        out = {"passed": passed, "exit_code": exit_code, "failed_gates": failed}
        out["inconclusive_gates"] = [g["name"] for g in gates if g.get("inconclusive")]
        out.update(sections)
        out = _insert_after(out, "latency", "gates", gates)
        if int8 is not None:
            out["int8"] = int8
        out["shipped_model"] = tail["shipped"]["model"]
        return {**out, **tail}


def _insert_after(mapping: dict[str, Any], after: str, key: str, value: Any) -> dict[str, Any]:
    items = list(mapping.items())
    index = [name for name, _ in items].index(after) + 1
    return dict([*items[:index], (key, value), *items[index:]])


def shipped_gates(verified: VerifyReport, int8: dict[str, Any] | None) -> list[Gate]:
    """The gates that judge the shipped model.

    When int8 ships, its own accuracy and latency gates decide, next to the fp32 export's parity
    gates (int8 cannot meet fp32 logit tolerances).
    """
    gates = [asdict(gate) for gate in verified.gates]
    if int8 and int8["decision"]["use_int8"]:
        parity = [gate for gate in gates if gate["name"].startswith("parity_")]
        return parity + [
            {**gate, "name": f"int8_{gate['name']}"} for gate in int8["verify"]["gates"]
        ]
    return gates


def speedup_gates(speedup: dict[str, Any]) -> list[Gate]:
    """A shipped student slower than its teacher fails the run: it compresses nothing.

    Decided by the interleaved ratio's confidence interval: above 1 passes, below 1 fails,
    an interval around 1 (or a contended timing that did not clear 1) is inconclusive.
    """
    if not speedup.get("measured"):
        return []
    gate = asdict(make_gate("faster_than_teacher", speedup["speedup"], 1.0, ">=", "x"))
    verdict_ = speedup.get("verdict")
    if verdict_ is None:  # a record from before paired timing: the point estimate decides
        return [gate]
    interval = f"{speedup['ci_low']:.2f}-{speedup['ci_high']:.2f}"
    if verdict_ == "above":
        gate.update(passed=True, detail=f"{gate['detail'].split(':')[0]}: ok (CI {interval})")
    elif verdict_ == "below" and not speedup.get("contended"):
        gate.update(passed=False, detail=f"{gate['detail']} (CI {interval})")
    else:
        why = "a contended host" if speedup.get("contended") else "noise"
        gate.update(
            passed=False,
            inconclusive=True,
            detail=f"{speedup['speedup']:.3g}x >= 1x: INCONCLUSIVE, within {why} (CI {interval})",
        )
    return [gate]


def int8_decision_gates(int8: dict[str, Any] | None) -> list[Gate]:
    """An int8 keep-or-drop that a contended host left undecided makes the run inconclusive."""
    if not int8 or not int8["decision"].get("inconclusive"):
        return []
    reason = int8["decision"]["reason"]
    return [
        {
            "name": "int8_speed_decision",
            "passed": False,
            "value": float("nan"),
            "threshold": 1.0,
            "comparison": ">=",
            "detail": f"INCONCLUSIVE: {reason}",
            "inconclusive": True,
        }
    ]
