"""``kd``: Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015.

``kd_per_sample`` carries the ``T**2`` factor, so the training loss does not multiply by it
again.
The teacher is not detached here; ``DistillationLoss`` does that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compressor.losses.methods.base import (
    LossMethod,
    MethodSettings,
    kl_rows,
)

if TYPE_CHECKING:
    from torch import Tensor


def kd_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton KD per row: (N,) float32, ``T**2 * KL(softmax(t_n/T) || softmax(s_n/T))``."""
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
