"""``dkd``: Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022 (alpha*TCKD + beta*NCKD).

``dkd_loss`` carries the ``T**2`` factor. DKD's distillation term is warmed up linearly
(``LossConfig.warmup_epochs``), as in the paper. The teacher is not detached here.
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


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): ``T**2 * mean_n(alpha*TCKD_n + beta*NCKD_n)``.

    TCKD is the KL between the binary (target, non-target) distributions ``[b_t, b_\\t]``; NCKD is
    the KL between the distributions over the non-target classes only. Everything is computed in
    log space (``logsumexp``/``log_softmax`` over the gathered non-target logits), so no
    ``log(0)`` occurs, unlike a literal ``log(softmax)`` implementation.

    Args:
        student_logits: (N, C) student logits, C >= 2.
        teacher_logits: (N, C) teacher logits (not detached here).
        target: (N,) int64 ground-truth labels.
        alpha: weight of TCKD.
        beta: weight of NCKD.
        temperature: softening temperature T > 0.

    Returns:
        Scalar loss (float32). An empty batch (N=0) gives 0.0 connected to ``student_logits``.
    """
    check_logits(student_logits, teacher_logits, target)
    check_temperature(temperature)
    n, c = student_logits.shape
    if c < 2:
        raise ValueError(f"DKD needs at least 2 classes; got C={c}")
    if n == 0:
        return zero_like_loss(student_logits)
    return dkd_per_sample(student_logits, teacher_logits, target, alpha, beta, temperature).mean()


def dkd_per_sample(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> Tensor:
    """``dkd_loss`` before the mean over rows: (N,) float32."""
    import torch
    import torch.nn.functional as F

    c = student_logits.shape[1]
    # Column indices of the C-1 non-target classes of every row, by arithmetic rather than a
    # boolean mask, so no data-dependent shape (and no host synchronisation on a GPU).
    cols = torch.arange(c - 1, device=target.device).unsqueeze(0)
    others = cols + (cols >= target.unsqueeze(1)).long()  # (N, C-1)

    def decouple(logits: Tensor) -> tuple[Tensor, Tensor]:
        z = logits.float() / temperature
        z_target = z.gather(1, target.unsqueeze(1)).squeeze(1)
        z_other = z.gather(1, others)
        lse_other = torch.logsumexp(z_other, dim=1)
        lse_all = torch.logaddexp(z_target, lse_other)
        log_binary = torch.stack([z_target - lse_all, lse_other - lse_all], dim=1)  # (N, 2)
        return log_binary, F.log_softmax(z_other, dim=1)  # (N, 2), (N, C-1)

    log_b_s, log_other_s = decouple(student_logits)
    log_b_t, log_other_t = decouple(teacher_logits)
    per_sample = alpha * kl_rows(log_b_t, log_b_s) + beta * kl_rows(log_other_t, log_other_s)
    return per_sample * temperature**2


def _per_sample(student: Tensor, teacher: Tensor, target: Tensor, cfg: MethodSettings) -> Tensor:
    return dkd_per_sample(student, teacher, target, cfg.alpha, cfg.beta, cfg.temperature)


def _batch_mean(student: Tensor, teacher: Tensor, target: Tensor, cfg: MethodSettings) -> Tensor:
    return dkd_loss(student, teacher, target, cfg.alpha, cfg.beta, cfg.temperature)


METHOD = LossMethod(
    name="dkd",
    help="decoupled KD (target-class KL times --alpha, non-target times --beta), warmed up "
    "over --warmup-epochs",
    per_sample=_per_sample,
    batch_mean=_batch_mean,
    warms_up=True,
)
