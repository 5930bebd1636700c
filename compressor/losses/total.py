"""The training loss: ``L = lambda*CE + (1 - lambda)*warmup*distill``, configured by ``LossConfig``.

``distill`` is the configured method's term (``compressor.losses.methods``: KD, DKD, MSE, or none
for CE), optionally wrapped in teacher-bias removal (``compressor.losses.bias_aware``:
``b*L_right + (1 - b)*L_rectified``). DESIGN.md writes the bracket as ``T**2 * [...]``; here
``kd_loss`` and ``dkd_loss`` already carry the ``T**2`` factor, so the two are the same and
nothing multiplies by ``T**2`` again. ``DistillationLoss`` never names a method: what differs
between methods is read from their registry entry.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compressor.config.loss import DKD_WARMUP_EPOCHS, LossConfig, auto_warmup_epochs
from compressor.losses.bias_aware import bias_aware_distillation, bias_weight
from compressor.losses.methods import get_method
from compressor.losses.methods.base import check_logits, zero_like_loss

__all__ = [  # LossConfig and its helpers live in loss_config; kept here for callers of this module
    "DKD_WARMUP_EPOCHS",
    "DistillationLoss",
    "LossConfig",
    "LossOutput",
    "auto_warmup_epochs",
]


@dataclass(frozen=True)
class LossOutput:
    """One batch's loss, the terms it is made of, and its counters, kept apart.

    Attributes:
        loss: the scalar to minimise (differentiable wrt the student).
        terms: loss values that are means over the batch's samples (``"ce"``, ``"distill"``,
            with the bias-aware wrapper ``"right"`` and ``"rectified"``); the training loop
            averages them over an epoch's samples for its history.
        counters: what is not a per-sample mean: ``"n_wrong"`` (rows the teacher gets wrong)
            and this batch's schedule factors ``"b"`` and ``"warmup"``, where they apply.
    """

    loss: Tensor
    terms: dict[str, Tensor]
    counters: dict[str, Tensor]

    def as_dict(self) -> dict[str, Tensor]:
        """``{"loss": ..., **terms, **counters}`` in one dict, for logging."""
        return {"loss": self.loss, **self.terms, **self.counters}


class DistillationLoss(nn.Module):
    """CE + the configured method's (bias-aware) term; the training loop's only loss.

    Args:
        config: the loss settings.
        total_epochs: E, used by the b(e) schedule and the automatic warm-up.

    Attributes:
        method: the registry entry of ``config.method``.
        bias_aware: whether the bias-aware wrapper is on (asked for and supported).
        warmup_epochs: the effective warm-up W for this run (0 = none); only methods that
            warm up use it.
    """

    def __init__(self, config: LossConfig, total_epochs: int) -> None:
        super().__init__()
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1; got {total_epochs}")
        self.config = config
        self.total_epochs = total_epochs
        self.method = get_method(config.method)
        self.bias_aware = config.bias_aware and self.method.supports_bias_aware
        self.warmup_epochs = config.effective_warmup_epochs(total_epochs)
        if self.method.warms_up and self.warmup_epochs > total_epochs:
            warnings.warn(
                f"{self.method.name.upper()} warm-up of {self.warmup_epochs} epochs does not "
                f"complete within {total_epochs} epochs: the distillation term ends at weight "
                f"{total_epochs / self.warmup_epochs:.2f}; omit warmup_epochs to scale it with "
                "the schedule",
                UserWarning,
                stacklevel=2,
            )

    @property
    def distills(self) -> bool:
        """Whether the loss has a teacher term (and so needs the teacher's logits)."""
        return self.method.distills

    @property
    def rectifies(self) -> bool:
        """Whether the teacher's logits on the rows it gets wrong are rectified and used."""
        return self.bias_aware and self.config.rectification != "drop"

    def bias_weight_at(self, epoch: int) -> float | None:
        """b(e) of the bias-aware wrapper at a 0-based epoch; ``None`` when it is off."""
        if not self.bias_aware:
            return None
        return bias_weight(epoch, self.total_epochs, self.config.schedule)

    def warmup_factor(self, epoch: int) -> float:
        """The distillation term's weight ``min(1, (e+1)/W)`` for methods that warm up, else 1."""
        w = self.warmup_epochs
        if not (self.method.warms_up and w):
            return 1.0
        return min(1.0, (epoch + 1) / w)

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor, epoch: int
    ) -> LossOutput:
        """Compute the loss for one batch.

        Args:
            student_logits: (N, C) student logits.
            teacher_logits: (N, C) teacher logits; detached here, no gradient reaches the teacher.
            target: (N,) int64 labels.
            epoch: 0-based epoch index.

        Returns:
            The loss; terms ``"ce"`` and ``"distill"`` (with the bias-aware wrapper also
            ``"right"``, ``"rectified"``); counters ``"n_wrong"`` and ``"b"`` with the wrapper,
            ``"warmup"`` for methods that warm up. A method without a distillation term (ce)
            gives loss = CE and distill = 0, whatever ``ce_weight``.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be a 0-based index >= 0; got {epoch}")
        teacher_logits = teacher_logits.detach()
        check_logits(student_logits, teacher_logits, target)
        empty = student_logits.shape[0] == 0
        ce = zero_like_loss(student_logits) if empty else F.cross_entropy(student_logits, target)
        if not self.method.distills:
            return LossOutput(ce, {"ce": ce, "distill": torch.zeros_like(ce).detach()}, {})
        terms, counters = self._distillation(student_logits, teacher_logits, target, epoch)
        warmup = self.warmup_factor(epoch)
        if self.method.warms_up:
            counters["warmup"] = torch.full((), warmup, device=student_logits.device)
        weight = self.config.ce_weight
        loss = weight * ce + (1.0 - weight) * warmup * terms["distill"]
        return LossOutput(loss, {"ce": ce, **terms}, counters)

    def _distillation(
        self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor, epoch: int
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The method's term (``"distill"``), bias-aware if configured: (terms, counters)."""
        cfg, method = self.config, self.method
        if not self.bias_aware:
            return {"distill": method.batch_loss(student_logits, teacher_logits, target, cfg)}, {}
        per_sample = method.per_sample
        assert per_sample is not None  # LossMethod guarantees it where bias-aware is supported
        b = bias_weight(epoch, self.total_epochs, cfg.schedule)
        terms = bias_aware_distillation(
            student_logits, teacher_logits, target, lambda s, t, y: per_sample(s, t, y, cfg), b,
            cfg.rectification, cfg.bias_weighting,
        )  # fmt: skip
        n_wrong = terms.pop("n_wrong")
        # torch.full, not torch.tensor: a fill kernel, not a host-to-device copy that waits.
        return terms, {"n_wrong": n_wrong, "b": torch.full((), b, device=student_logits.device)}
