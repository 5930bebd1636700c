"""``mse``: mean squared error between the student's and the teacher's logits.

The smallest complete loss method, and the example to copy: a per-row loss and one
``LossMethod``, listed once in ``compressor/losses/methods/__init__.py``. The wrapper adds the
cross-entropy term (``LossConfig.ce_weight``), the bias-aware variant and the batch mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compressor.losses.methods.base import LossMethod, MethodSettings

if TYPE_CHECKING:
    from torch import Tensor


def mse_per_sample(student: Tensor, teacher: Tensor, target: Tensor, cfg: MethodSettings) -> Tensor:
    """``mean_c (s_nc - t_nc)**2`` for every row n: (N,) float32. Uses no label, no setting."""
    return (student.float() - teacher.float()).pow(2).mean(dim=1)


METHOD = LossMethod(
    name="mse",
    help="mean squared error between the student's and the teacher's logits",
    per_sample=mse_per_sample,
)
