"""What a loss method is (:class:`LossMethod`), and the checks and helpers every method shares.

A method is the distillation term of the training loss: a function of the student's and the
teacher's logits (and the labels) that ``compressor.losses.total.DistillationLoss`` weighs against
cross-entropy. The maths of each method lives in its own module beside this one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # torch is imported where a loss is computed, not when the registry is read
    from torch import Tensor


class MethodSettings(Protocol):
    """The settings a method reads (``compressor.config.loss.LossConfig`` has them all); a
    protocol, so the methods never import the configuration that validates their names."""

    temperature: float
    alpha: float
    beta: float


# (student_logits, teacher_logits, target, settings) -> a (N,) per-row loss or a scalar
MethodLoss = Callable[["Tensor", "Tensor", "Tensor", MethodSettings], "Tensor"]


def check_logits(student: Tensor, teacher: Tensor, target: Tensor | None = None) -> None:
    """Raise ``ValueError`` unless both logits are (N, C) and ``target`` (if given) is (N,)."""
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(
            f"logits must both be (N, C); got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if target is not None and (target.dim() != 1 or target.shape[0] != student.shape[0]):
        raise ValueError(
            f"target must be (N,) with N={student.shape[0]}; got {tuple(target.shape)}"
        )


def check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature}")


def zero_like_loss(student_logits: Tensor) -> Tensor:
    """A scalar 0.0 still connected to the student's graph (so ``backward`` works)."""
    return student_logits.sum() * 0.0


def kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Row-wise KL(p || q) from log-probabilities, shape (N, K) -> (N,). Finite if inputs are."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


@dataclass(frozen=True)
class LossMethod:
    """One registered distillation method (see ``compressor.losses.methods`` for the registry).

    Attributes:
        name: the ``--method`` value; also a recipe name, so letters, digits, ``_`` and ``-``.
        help: one line for the CLI's ``--method`` help.
        per_sample: ``(student, teacher, target, config) -> (N,)`` float32, the loss of every
            row; the bias-aware wrapper needs it. ``None`` with ``batch_mean`` also ``None``
            means no distillation term at all (the loss is cross-entropy alone).
        batch_mean: ``(student, teacher, target, config) -> scalar``, the loss of a batch when
            it is more than the mean of ``per_sample`` (argument checks, an empty batch).
            ``None``: the checked mean of ``per_sample``, 0 on an empty batch.
        warms_up: the distillation term ramps in linearly over ``LossConfig.warmup_epochs``.
        supports_bias_aware: ``LossConfig.bias_aware`` wraps this method in teacher-bias removal
            (and ``recipes.py`` offers ``<name>+bias``). Needs ``per_sample``.
    """

    name: str
    help: str
    per_sample: MethodLoss | None = None
    batch_mean: MethodLoss | None = None
    warms_up: bool = False
    supports_bias_aware: bool = True

    def __post_init__(self) -> None:
        if not self.name or not all(ch.isalnum() or ch in "_-" for ch in self.name):
            raise ValueError(f"a loss method name is letters, digits, _ and -; got {self.name!r}")
        if self.supports_bias_aware and self.per_sample is None:
            raise ValueError(f"loss method {self.name!r}: bias-aware needs a per-sample loss")

    @property
    def distills(self) -> bool:
        """Whether the method has a teacher term (and so needs a teacher)."""
        return self.per_sample is not None or self.batch_mean is not None

    def batch_loss(
        self, student: Tensor, teacher: Tensor, target: Tensor, config: MethodSettings
    ) -> Tensor:
        """The method's scalar loss over a batch."""
        if self.batch_mean is not None:
            return self.batch_mean(student, teacher, target, config)
        if self.per_sample is None:
            raise ValueError(f"loss method {self.name!r} has no distillation term")
        check_logits(student, teacher, target)
        if student.shape[0] == 0:
            return zero_like_loss(student)
        return self.per_sample(student, teacher, target, config).mean()
