"""Reference losses for the tests: the plain, indexing versions the product's batched code is
checked against. Not product code: the package has one implementation of each loss."""

from __future__ import annotations

from torch import Tensor

from compressor.losses.bias_aware import BaseLoss, check_bias_args, rectify_teacher_logits
from compressor.losses.methods.base import check_logits, check_temperature, zero_like_loss
from compressor.losses.methods.kd import kd_per_sample


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


def reference_bias_aware(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    base: BaseLoss,
    b: float,
    rectification: str = "swap",
    weighting: str = "subset",
) -> dict[str, Tensor]:
    """The bias-aware loss computed the obvious way, by indexing the right and wrong subsets: the
    oracle that :func:`compressor.losses.bias_aware.bias_aware_distillation` (masks, no host
    synchronisation) is tested against.

    Rows split into right (teacher top-1 == label) and wrong. ``L_right = base`` on the right
    rows, ``L_rect = base`` on the wrong rows with rectified teacher logits (0 for ``"drop"``);
    each is averaged over its own rows (by ``base``). An empty subset gives an exact 0 term.

    Weighting (a choice: the paper's ``b*L_right + (1-b)*L_rect`` would shrink a batch the teacher
    gets entirely right to ``b*base``): the weights are renormalised over the non-empty terms,
    ``distill = (b*L_right*[n_right>0] + (1-b)*L_rect*[n_wrong>0]) / (b*[n_right>0] +
    (1-b)*[n_wrong>0])``, and 0 when that denominator is 0 (e.g. b=1 on an all-wrong batch). So
    an all-right batch gives exactly ``base`` for any b > 0, and a mixed batch gives the paper's
    formula. With ``"drop"`` the rectified term never counts: ``distill = L_right``.

    Args:
        student_logits: (N, C) student logits.
        teacher_logits: (N, C) teacher logits (not detached here).
        target: (N,) int64 labels.
        base: ``base(student, teacher, target) -> scalar``, mean over its rows.
        b: weight of the right term, in [0, 1] (see ``bias_weight``).
        rectification: ``"swap"``, ``"soft"`` or ``"drop"``.
        weighting: ``"subset"`` (the paper's per-subset means) or ``"sample"``.

    Returns:
        ``{"distill", "right", "rectified", "n_wrong"}``: scalar tensors (``n_wrong`` int64).
    """
    check_bias_args(student_logits, teacher_logits, target, b, rectification, weighting)
    right = teacher_logits.argmax(dim=1) == target
    wrong = ~right
    n_wrong = wrong.sum()
    n_w = int(n_wrong)
    n_r = target.shape[0] - n_w
    zero = zero_like_loss(student_logits)
    l_right = base(student_logits[right], teacher_logits[right], target[right]) if n_r else zero
    l_rect = zero
    if n_w and rectification != "drop":
        t_wrong = rectify_teacher_logits(teacher_logits[wrong], target[wrong], rectification)
        l_rect = base(student_logits[wrong], t_wrong, target[wrong])
    if weighting == "sample":
        n = target.shape[0]
        w_right, w_rect = (1.0, 0.0) if rectification == "drop" else (b, 1.0 - b)
        distill = (w_right * n_r / n) * l_right + (w_rect * n_w / n) * l_rect
    elif rectification == "drop":
        distill = l_right
    else:
        w_right = b if n_r else 0.0
        w_rect = (1.0 - b) if n_w else 0.0
        denom = w_right + w_rect
        # renormalise the Python floats first: a b below float32's range would turn into 0 in a
        # float32 product, and 0 / b is then NaN; b / b is exactly 1 for any b > 0
        distill = zero
        if denom > 0:
            distill = (w_right / denom) * l_right + (w_rect / denom) * l_rect
    return {"distill": distill, "right": l_right, "rectified": l_rect, "n_wrong": n_wrong}
