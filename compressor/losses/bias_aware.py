"""Teacher-bias removal around a base loss (Zhang et al., AAAI 2025), as pure functions.

Zhang et al., "Can Students Beyond the Teacher? Distilling Knowledge from Teacher's Bias",
AAAI 2025, arXiv:2412.09874: bias elimination (the rows the teacher gets wrong are split off),
bias rectification (their teacher logits corrected) and the dynamic weight b(e) of the rows it
gets right. ``DistillationLoss`` applies it to any method that registers a per-sample loss.
The functions do not detach the teacher.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from compressor.config.loss import RECTIFICATIONS, SCHEDULES, WEIGHTINGS
from compressor.losses.methods.base import check_logits, zero_like_loss

BaseLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


def rectify_teacher_logits(teacher_logits: Tensor, target: Tensor, mode: str) -> Tensor:
    """Correct the teacher's logits on the samples it gets wrong (Zhang et al., AAAI 2025).

    For every row with ``p = argmax(z) != y`` (ties go to the first maximal index, as in
    ``torch.argmax``):

    * ``"swap"``: exchange ``z_p`` and ``z_y``.
    * ``"soft"``: ``a = (z_y + 1)/2``, ``c = z_p/2``, ``s = (z_y + z_p)/(a + c)``, then
      ``z'_y = a*s`` and ``z'_p = c*s`` (so ``z'_y + z'_p = z_y + z_p``). Where
      ``|a + c| < 1e-6`` the rescale is undefined and that row falls back to ``"swap"``. Note the
      soft variant does not guarantee that ``y`` becomes the top-1 class.

    Rows the teacher gets right are returned unchanged. The input is never modified.

    Args:
        teacher_logits: (N, C) teacher logits.
        target: (N,) int64 labels.
        mode: ``"swap"`` or ``"soft"`` (``"drop"`` needs no rectified logits).

    Returns:
        A new (N, C) tensor.
    """
    if mode not in ("swap", "soft"):
        raise ValueError(f"rectification mode must be 'swap' or 'soft'; got {mode!r}")
    check_logits(teacher_logits, teacher_logits, target)
    pred = teacher_logits.argmax(dim=1, keepdim=True)  # (N, 1)
    true = target.unsqueeze(1)  # (N, 1)
    z_p = teacher_logits.gather(1, pred)
    z_y = teacher_logits.gather(1, true)
    new_y, new_p = z_p, z_y  # swap
    if mode == "soft":
        a, c = (z_y + 1.0) / 2.0, z_p / 2.0
        ok = (a + c).abs() >= 1e-6
        scale = (z_y + z_p) / torch.where(ok, a + c, torch.ones_like(a))
        new_y = torch.where(ok, a * scale, z_p)
        new_p = torch.where(ok, c * scale, z_y)
    wrong = pred != true
    out = teacher_logits.scatter(1, pred, torch.where(wrong, new_p, z_p))
    return out.scatter(1, true, torch.where(wrong, new_y, z_y))


def bias_weight(epoch: int, total_epochs: int, schedule: str = "cos2") -> float:
    """Dynamic weight b(e) of the right-sample term (easy first, hard later).

    Args:
        epoch: 0-based epoch index e, ``0 <= e < E``.
        total_epochs: number of epochs E >= 1.
        schedule: ``"cos2"`` = cos^2(pi/2 * e/E) (the paper's), ``"linear"`` = 1 - e/E,
            ``"constant"`` = 0.5.

    Returns:
        b(e) in [0, 1].
    """
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1; got {total_epochs}")
    if not 0 <= epoch < total_epochs:
        raise ValueError(f"epoch must be a 0-based index in [0, {total_epochs - 1}]; got {epoch}")
    progress = epoch / total_epochs
    if schedule == "cos2":
        return math.cos(math.pi / 2 * progress) ** 2
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "constant":
        return 0.5
    raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")


def check_bias_args(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    b: float,
    rectification: str,
    weighting: str = "subset",
) -> None:
    check_logits(student, teacher, target)
    if rectification not in RECTIFICATIONS:
        raise ValueError(f"rectification must be one of {RECTIFICATIONS}; got {rectification!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}")
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"b must be in [0, 1]; got {b}")


def bias_aware_distillation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    per_sample_base: BaseLoss,
    b: float,
    rectification: str = "swap",
    weighting: str = "subset",
) -> dict[str, Tensor]:
    """Bias elimination + rectification around a per-row base loss (Zhang et al., AAAI 2025).

    Rows split into right (teacher top-1 == label) and wrong. ``L_right`` is the mean base loss
    over the right rows, ``L_rect`` over the wrong rows with rectified teacher logits (0 for
    ``"drop"``); an empty subset gives an exact 0 term.

    ``weighting="subset"`` (the paper's per-subset means): the paper's ``b*L_right +
    (1-b)*L_rect`` would shrink a batch the teacher gets entirely right to ``b*base``, so the
    weights are renormalised over the non-empty terms, ``distill = (b*L_right*[n_right>0] +
    (1-b)*L_rect*[n_wrong>0]) / (b*[n_right>0] + (1-b)*[n_wrong>0])``, and 0 when that
    denominator is 0 (e.g. b=1 on an all-wrong batch). An all-right batch gives exactly
    ``base`` for any b > 0, a mixed batch the paper's formula. With ``"drop"`` the rectified term
    never counts: ``distill = L_right``. ``weighting="sample"``: every row's term weighted b
    (right) or 1 - b (wrong; 0 under ``"drop"``), summed and divided by the batch size, so the
    rectified rows keep their share of the batch.

    Computed over all rows with masks: the teacher's logits are rectified for every row (right
    rows are unchanged by :func:`rectify_teacher_logits`) and one per-row base loss is taken, so
    no subset size is read back from the device (no host synchronisation on a GPU). The tests
    check it against a reference that indexes the subsets (``tests/reference_losses.py``).

    Args:
        student_logits: (N, C) student logits.
        teacher_logits: (N, C) teacher logits (not detached here).
        target: (N,) int64 labels.
        per_sample_base: ``(student, teacher, target) -> (N,)`` per-row base loss.
        b: weight of the right term, in [0, 1] (see ``bias_weight``).
        rectification: ``"swap"``, ``"soft"`` or ``"drop"``.
        weighting: ``"subset"`` or ``"sample"``.

    Returns:
        ``{"distill", "right", "rectified", "n_wrong"}``: scalar tensors (``n_wrong`` int64).
    """
    check_bias_args(student_logits, teacher_logits, target, b, rectification, weighting)
    right = teacher_logits.argmax(dim=1) == target
    wrong = ~right
    n_right, n_wrong = right.sum(), wrong.sum()

    def masked_mean(per_row: Tensor, mask: Tensor, count: Tensor) -> Tensor:
        kept = torch.where(mask, per_row, torch.zeros_like(per_row))
        return kept.sum() / count.clamp_min(1)

    drop = rectification == "drop"
    per_row = per_sample_base(  # right rows see the same logits either way
        student_logits,
        teacher_logits if drop else rectify_teacher_logits(teacher_logits, target, rectification),
        target,
    )
    l_right = masked_mean(per_row, right, n_right)
    if weighting == "sample":  # per-row weights over the batch size
        w_right, w_wrong = (1.0, 0.0) if drop else (b, 1.0 - b)
        l_rect = zero_like_loss(student_logits) if drop else masked_mean(per_row, wrong, n_wrong)
        weights = torch.where(right, w_right, w_wrong)
        distill = (weights * per_row).sum() / target.shape[0]
    elif drop:
        l_rect = zero_like_loss(student_logits)
        distill = l_right
    else:
        l_rect = masked_mean(per_row, wrong, n_wrong)
        # the renormalised weights, chosen per case rather than divided on the device (a b
        # below float32's range is 0 there, and any clamp of the denominator shrinks the term):
        # both subsets -> (b, 1 - b); one subset -> 1 for it (0 if its weight is 0); none -> 0
        has_right, has_wrong = n_right > 0, n_wrong > 0
        w_right = torch.where(has_wrong, b, float(b > 0.0)) * has_right
        w_rect = torch.where(has_right, 1.0 - b, float(b < 1.0)) * has_wrong
        distill = w_right * l_right + w_rect * l_rect
    return {"distill": distill, "right": l_right, "rectified": l_rect, "n_wrong": n_wrong}
