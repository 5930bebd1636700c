"""What the stages of a run hand each other: one typed field per stage, no string keys.

Each stage's ``run`` (or ``load``, on ``--resume``) returns its own type; the runner stores it
under the stage's ``name``, which must be a field here (:meth:`StageResults.store` refuses any
other). Later stages and the report builder read typed attributes, so a renamed or missing
result is a type error, not a ``KeyError`` at the end of a long run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from compressor.export.to_onnx import ExportResult
    from compressor.export.verify import VerifyReport
    from compressor.report.model import Report
    from compressor.selection.table import Selection
    from compressor.train.loop import DistillResult


T = TypeVar("T")


def required(result: T | None, stage: str) -> T:
    """A stage's result that a later stage needs: present whenever the stage order is right."""
    if result is None:
        raise RuntimeError(f"the {stage!r} stage has no result yet: check the order of STAGES")
    return result


@dataclass(frozen=True)
class Int8Result:
    """The int8 stage: quantization, the int8 model's verification, and the keep-or-drop
    decision from interleaved fp32/int8 timing (int8.json)."""

    quantize: dict[str, Any]
    verify: dict[str, Any]
    decision: dict[str, Any]
    paired_latency: dict[str, Any]

    @property
    def ships(self) -> bool:
        """Whether int8 ships: the one place this is decided after the decision is made."""
        return bool(self.decision["use_int8"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SpeedupResult:
    """The shipped student against its teacher, timed interleaved (report.json ``speedup``).

    ``measured`` is False, with ``note`` saying why, when the teacher could not be exported.
    """

    measured: bool
    note: str | None = None
    method: str | None = None
    percentile: float | None = None
    teacher_ms: float | None = None
    student_ms: float | None = None
    speedup: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    coverage: float | None = None
    rounds: int | None = None
    verdict: str | None = None
    contended: bool | None = None
    cpu: dict[str, Any] | None = None
    min_speedup: float | None = None
    teacher: dict[str, Any] | None = None
    student: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """report.json's ``speedup``: every field when measured, else ``measured`` and ``note``."""
        if not self.measured:
            return {"measured": False, "note": self.note}
        return {k: v for k, v in asdict(self).items() if k != "note"}


@dataclass
class StageResults:
    """The results of the stages run (or reloaded) so far, one field per stage name."""

    select: Selection | None = None
    distill: DistillResult | None = None
    export: ExportResult | None = None
    verify: VerifyReport | None = None
    int8: Int8Result | None = None  # None: not an int8 profile
    speedup: SpeedupResult | None = None
    report: Report | None = None

    def store(self, stage: str, result: Any) -> None:
        if stage not in {f.name for f in fields(self)}:
            raise KeyError(f"no result field for stage {stage!r}: add one to StageResults")
        setattr(self, stage, result)

    @property
    def ships_int8(self) -> bool:
        """Whether the shipped model is the int8 one (int8 profiles whose int8 proved better)."""
        return self.int8 is not None and self.int8.ships
