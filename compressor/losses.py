"""Distillation losses: Hinton KD, DKD and the bias-aware wrapper, as pure functions.

References:
    * Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015 (KD).
    * Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022 (DKD = alpha*TCKD + beta*NCKD).
    * Zhang et al., "Can Students Beyond the Teacher? Distilling Knowledge from Teacher's Bias",
      AAAI 2025, arXiv:2412.09874 (bias elimination, bias rectification, dynamic weight b(e)).

The total loss is ``L = lambda*CE + (1 - lambda)*warmup*[b*L_right + (1 - b)*L_rectified]``.
DESIGN.md writes the bracket as ``T**2 * [...]``; here ``kd_loss`` and ``dkd_loss`` already
carry the ``T**2`` factor, so the two are the same and nothing multiplies by ``T**2`` again.
The pure functions do not detach the teacher; ``DistillationLoss`` does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BaseLoss = Callable[[Tensor, Tensor, Tensor], Tensor]
METHODS = ("kd", "dkd", "ce")
SCHEDULES = ("cos2", "linear", "constant")
RECTIFICATIONS = ("swap", "soft", "drop")


def _check_logits(student: Tensor, teacher: Tensor, target: Tensor | None = None) -> None:
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(
            f"logits must both be (N, C); got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if target is not None and (target.dim() != 1 or target.shape[0] != student.shape[0]):
        raise ValueError(
            f"target must be (N,) with N={student.shape[0]}; got {tuple(target.shape)}"
        )


def _check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature}")


def _zero_like_loss(student_logits: Tensor) -> Tensor:
    """A scalar 0.0 still connected to the student's graph (so ``backward`` works)."""
    return student_logits.sum() * 0.0


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Row-wise KL(p || q) from log-probabilities, shape (N, K) -> (N,). Finite if inputs are."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton KD: ``T**2 * mean_n KL(softmax(t_n/T) || softmax(s_n/T))``.

    Args:
        student_logits: (N, C) student logits.
        teacher_logits: (N, C) teacher logits (not detached here).
        temperature: softening temperature T > 0.

    Returns:
        Scalar loss (float32). An empty batch (N=0) gives 0.0 connected to ``student_logits``.
    """
    _check_logits(student_logits, teacher_logits)
    _check_temperature(temperature)
    if student_logits.shape[0] == 0:
        return _zero_like_loss(student_logits)
    return kd_per_sample(student_logits, teacher_logits, temperature).mean()


def kd_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``kd_loss`` before the mean over rows: (N,) float32, ``T**2 * KL_n``."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return _kl(log_p_t, log_p_s) * temperature**2


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
    _check_logits(student_logits, teacher_logits, target)
    _check_temperature(temperature)
    n, c = student_logits.shape
    if c < 2:
        raise ValueError(f"DKD needs at least 2 classes; got C={c}")
    if n == 0:
        return _zero_like_loss(student_logits)
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
    per_sample = alpha * _kl(log_b_t, log_b_s) + beta * _kl(log_other_t, log_other_s)
    return per_sample * temperature**2


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
        mode: ``"swap"`` or ``"soft"`` (``"drop"`` is handled by ``bias_aware_distillation``).

    Returns:
        A new (N, C) tensor.
    """
    if mode not in ("swap", "soft"):
        raise ValueError(f"rectification mode must be 'swap' or 'soft'; got {mode!r}")
    _check_logits(teacher_logits, teacher_logits, target)
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


def _check_bias_args(
    student: Tensor, teacher: Tensor, target: Tensor, b: float, rectification: str
) -> None:
    _check_logits(student, teacher, target)
    if rectification not in RECTIFICATIONS:
        raise ValueError(f"rectification must be one of {RECTIFICATIONS}; got {rectification!r}")
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"b must be in [0, 1]; got {b}")


def bias_aware_distillation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    base: BaseLoss,
    b: float,
    rectification: str = "swap",
) -> dict[str, Tensor]:
    """Bias elimination + rectification around a base loss (Zhang et al., AAAI 2025).

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

    Returns:
        ``{"distill", "right", "rectified", "n_wrong"}``: scalar tensors (``n_wrong`` int64).
    """
    _check_bias_args(student_logits, teacher_logits, target, b, rectification)
    right = teacher_logits.argmax(dim=1) == target
    wrong = ~right
    n_wrong = wrong.sum()
    n_w = int(n_wrong)
    n_r = target.shape[0] - n_w
    zero = _zero_like_loss(student_logits)
    l_right = base(student_logits[right], teacher_logits[right], target[right]) if n_r else zero
    l_rect = zero
    if n_w and rectification != "drop":
        t_wrong = rectify_teacher_logits(teacher_logits[wrong], target[wrong], rectification)
        l_rect = base(student_logits[wrong], t_wrong, target[wrong])
    if rectification == "drop":
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


def bias_aware_distillation_batched(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    per_sample_base: BaseLoss,
    b: float,
    rectification: str = "swap",
) -> dict[str, Tensor]:
    """:func:`bias_aware_distillation` computed over all rows with masks: the training path.

    The reference above indexes the right and wrong subsets, whose sizes live on the device, so
    every call waits for the GPU. Here the teacher's logits are rectified for every row (right
    rows are unchanged by :func:`rectify_teacher_logits`), one per-sample base loss is computed,
    and the two terms are masked means with the same renormalised weights. Same values up to
    float rounding (tested against the reference), no host synchronisation.

    Args:
        per_sample_base: ``(student, teacher, target) -> (N,)`` per-row base loss.
        Others as for :func:`bias_aware_distillation`.
    """
    _check_bias_args(student_logits, teacher_logits, target, b, rectification)
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
    if drop:
        l_rect = _zero_like_loss(student_logits)
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


@dataclass(frozen=True)
class LossConfig:
    """Loss settings. ``L = ce_weight*CE + (1 - ce_weight)*warmup*distill``.

    Attributes:
        method: ``"kd"``, ``"dkd"`` or ``"ce"`` (CE only, the no-distillation baseline).
        bias_aware: wrap the base loss in ``bias_aware_distillation``. Off by default: on
            CIFAR-10 with weak, well-trained and systematically biased teachers it never beat
            plain KD and lost up to 14 points (docs/benchmarks.md, "across teacher regimes").
        ce_weight: lambda in [0, 1].
        temperature: T > 0.
        alpha: DKD TCKD weight >= 0.
        beta: DKD NCKD weight >= 0.
        warmup_epochs: DKD linear warm-up length W, factor ``min(1, (e+1)/W)``; 0 = none.
            ``None`` (the default) scales it with the schedule of E epochs:
            ``W = min(20, max(1, E // 4))`` (see :func:`auto_warmup_epochs`), so the warm-up
            always ends within the first quarter of the run and never exceeds DKD's published
            20 epochs. An explicit W is honoured as given; one longer than the schedule warns
            (the distillation term then never reaches full weight).
        schedule: b(e) schedule, see ``bias_weight``.
        rectification: ``"swap"``, ``"soft"`` or ``"drop"``.
    """

    method: str = "kd"
    bias_aware: bool = False
    ce_weight: float = 0.5
    temperature: float = 4.0
    alpha: float = 1.0
    beta: float = 8.0
    warmup_epochs: int | None = None
    schedule: str = "cos2"
    rectification: str = "swap"

    def __post_init__(self) -> None:
        choices = {"method": METHODS, "schedule": SCHEDULES, "rectification": RECTIFICATIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}")
        if not isinstance(self.bias_aware, bool):
            raise ValueError(f"bias_aware must be true or false; got {self.bias_aware!r}")
        rules: dict[str, tuple[str, Callable[[float], bool]]] = {
            "ce_weight": ("in [0, 1]", lambda v: 0.0 <= v <= 1.0),
            "temperature": ("> 0", lambda v: v > 0.0),
            "alpha": (">= 0", lambda v: v >= 0.0),
            "beta": (">= 0", lambda v: v >= 0.0),
        }
        for name, (allowed_text, ok) in rules.items():
            v = getattr(self, name)
            real = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not (real and ok(v)):
                raise ValueError(f"{name} must be a finite number {allowed_text}; got {v!r}")
        w = self.warmup_epochs
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 0):
            raise ValueError(f"warmup_epochs must be an integer >= 0 or None (auto); got {w!r}")

    def effective_warmup_epochs(self, total_epochs: int) -> int:
        """The DKD warm-up length W used for a run of ``total_epochs`` (0 = none)."""
        if self.warmup_epochs is None:
            return auto_warmup_epochs(total_epochs)
        return self.warmup_epochs


DKD_WARMUP_EPOCHS = 20  # Zhao et al. 2022 (240-epoch CIFAR-100 schedule): the cap of the auto rule


def auto_warmup_epochs(total_epochs: int) -> int:
    """DKD warm-up scaled to the schedule: ``min(20, max(1, E // 4))`` epochs.

    DKD's published 20-epoch warm-up belongs to a 240-epoch schedule; a fixed 20 never completes
    in a short run (at E = 10 the distillation term would end at half weight). A quarter of the
    run, capped at 20, completes by epoch ``E // 4`` (0-based ``W - 1``) for every E >= 1, and
    gives DKD's own 20 from E = 80 on. ``W = 1`` means no ramp (factor 1 from epoch 0).

    Args:
        total_epochs: E >= 1.

    Returns:
        W in [1, 20].
    """
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1; got {total_epochs}")
    return min(DKD_WARMUP_EPOCHS, max(1, total_epochs // 4))


class DistillationLoss(nn.Module):
    """CE + (bias-aware) KD/DKD, configured by ``LossConfig``; the training loop's only loss.

    Args:
        config: the loss settings.
        total_epochs: E, used by the b(e) schedule and the automatic DKD warm-up.

    Attributes:
        warmup_epochs: the effective DKD warm-up W for this run (0 = none).
    """

    def __init__(self, config: LossConfig, total_epochs: int) -> None:
        super().__init__()
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1; got {total_epochs}")
        self.config = config
        self.total_epochs = total_epochs
        self.warmup_epochs = config.effective_warmup_epochs(total_epochs)
        if config.method == "dkd" and self.warmup_epochs > total_epochs:
            warnings.warn(
                f"DKD warm-up of {self.warmup_epochs} epochs does not complete within "
                f"{total_epochs} epochs: the distillation term ends at weight "
                f"{total_epochs / self.warmup_epochs:.2f}; omit warmup_epochs to scale it with "
                "the schedule",
                UserWarning,
                stacklevel=2,
            )

    def base_loss(self) -> BaseLoss:
        """The configured base loss as ``(student, teacher, target) -> scalar``."""
        cfg = self.config
        if cfg.method == "dkd":
            return lambda s, t, y: dkd_loss(s, t, y, cfg.alpha, cfg.beta, cfg.temperature)
        return lambda s, t, y: kd_loss(s, t, cfg.temperature)

    def per_sample_base_loss(self) -> BaseLoss:
        """The configured base loss per row, ``(student, teacher, target) -> (N,)``."""
        cfg = self.config
        if cfg.method == "dkd":
            return lambda s, t, y: dkd_per_sample(s, t, y, cfg.alpha, cfg.beta, cfg.temperature)
        return lambda s, t, y: kd_per_sample(s, t, cfg.temperature)

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor, epoch: int
    ) -> dict[str, Tensor]:
        """Compute the loss for one batch.

        Args:
            student_logits: (N, C) student logits.
            teacher_logits: (N, C) teacher logits; detached here, no gradient reaches the teacher.
            target: (N,) int64 labels.
            epoch: 0-based epoch index.

        Returns:
            ``"loss"`` (differentiable wrt the student), ``"ce"``, ``"distill"``; for kd/dkd with
            ``bias_aware`` also ``"right"``, ``"rectified"``, ``"n_wrong"``, ``"b"``; for dkd also
            ``"warmup"``. Method ``"ce"`` returns only loss (= CE), ce and distill (= 0).
        """
        cfg = self.config
        if epoch < 0:
            raise ValueError(f"epoch must be a 0-based index >= 0; got {epoch}")
        teacher_logits = teacher_logits.detach()
        _check_logits(student_logits, teacher_logits, target)
        empty = student_logits.shape[0] == 0
        ce = _zero_like_loss(student_logits) if empty else F.cross_entropy(student_logits, target)
        if cfg.method == "ce":
            return {"loss": ce, "ce": ce, "distill": torch.zeros_like(ce).detach()}
        out: dict[str, Tensor] = {}
        if cfg.bias_aware:
            b = bias_weight(epoch, self.total_epochs, cfg.schedule)
            out = bias_aware_distillation_batched(
                student_logits, teacher_logits, target, self.per_sample_base_loss(), b,
                cfg.rectification,
            )  # fmt: skip
            # torch.full, not torch.tensor: a fill kernel, not a host-to-device copy that waits.
            out["b"] = torch.full((), b, device=student_logits.device)
        else:
            out["distill"] = self.base_loss()(student_logits, teacher_logits, target)
        warmup = 1.0
        if cfg.method == "dkd":
            w = self.warmup_epochs
            warmup = min(1.0, (epoch + 1) / w) if w else 1.0
            out["warmup"] = torch.full((), warmup, device=student_logits.device)
        out["loss"] = cfg.ce_weight * ce + (1.0 - cfg.ce_weight) * warmup * out["distill"]
        out["ce"] = ce
        return out
