"""``kd``: Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015.

``kd_loss`` carries the ``T**2`` factor, so the training loss does not multiply by it again.
The teacher is not detached here; ``DistillationLoss`` does that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compressor.losses.methods.base import (
    LossMethod,
    MethodSettings,
    check_logits,
    check_temperature,
    kl_rows,
    zero_like_loss,
)

if TYPE_CHECKING:
    from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton KD: ``T**2 * mean_n KL(softmax(t_n/T) || softmax(s_n/T))``.

    Args:
        student_logits: (N, C) student logits.
        teacher_logits: (N, C) teacher logits (not detached here).
        temperature: softening temperature T > 0.

    Returns:
        Scalar loss (float32). An empty batch (N=0) gives 0.0 connected to ``student_logits``.
    """
    check_logits(student_logits, teacher_logits)
    check_temperature(temperature)
    if student_logits.shape[0] == 0:
        return zero_like_loss(student_logits)
    return kd_per_sample(student_logits, teacher_logits, temperature).mean()


def kd_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``kd_loss`` before the mean over rows: (N,) float32, ``T**2 * KL_n``."""
    import torch.nn.functional as F

    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return kl_rows(log_p_t, log_p_s) * temperature**2


def _per_sample(student: Tensor, teacher: Tensor, target: Tensor, cfg: MethodSettings) -> Tensor:
    return kd_per_sample(student, teacher, cfg.temperature)


METHOD = LossMethod(
    name="kd",
    help="Hinton KD on the logits softened by --temperature",
    per_sample=_per_sample,  # the batch loss is its checked mean (LossMethod.batch_loss)
)
