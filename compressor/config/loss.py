"""The loss settings (:class:`LossConfig`) and the fixed choices they validate against.

Torch-free, imports nothing from the project, and imported by the CLI before any command runs,
so ``--help`` stays fast. ``method`` names an entry of the registry
(:mod:`compressor.losses.methods`), which checks it where the loss is built
(:func:`compressor.losses.methods.get_method`): the configuration sits below the code that reads
it. The maths that reads these settings lives in :mod:`compressor.losses.total` and
:mod:`compressor.losses.bias_aware`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

SCHEDULES = ("cos2", "linear", "constant")  # b(e), see compressor.losses.bias_aware.bias_weight
RECTIFICATIONS = ("swap", "soft", "drop")  # of the rows the teacher gets wrong
WEIGHTINGS = ("subset", "sample")  # how right and rectified rows are weighed


@dataclass(frozen=True)
class LossConfig:
    """Loss settings. ``L = ce_weight*CE + (1 - ce_weight)*warmup*distill``.

    Attributes:
        method: a registered method, see :func:`compressor.losses.methods.method_names`
            (``"kd"``, ``"dkd"``, ``"ce"`` = CE only, ``"mse"``).
        bias_aware: wrap the method's loss in ``bias_aware_distillation`` where the method
            supports it (ce does not). On by default, with ``rectification="drop"``
            (elimination: the rows the teacher gets wrong lose their soft target and keep
            cross-entropy): over 5 seeds on CIFAR-10 it was never worse than plain KD beyond
            noise and kept more of the class a biased teacher gets wrong (docs/benchmarks.md,
            issue #25). ``swap`` with the paper's subset weighting lost up to 13 points.
        ce_weight: lambda in [0, 1].
        temperature: T > 0.
        alpha: DKD TCKD weight >= 0.
        beta: DKD NCKD weight >= 0.
        warmup_epochs: linear warm-up length W of the methods that warm up (DKD), factor
            ``min(1, (e+1)/W)``; 0 = none. ``None`` (the default) scales it with the
            schedule of E epochs: ``W = min(20, max(1, E // 4))`` (see
            :func:`auto_warmup_epochs`), so the warm-up always ends within the first quarter of
            the run and never exceeds DKD's published 20 epochs. An explicit W is honoured as
            given; one longer than the schedule warns (the distillation term then never
            reaches full weight).
        schedule: b(e) schedule, see ``bias_weight``.
        rectification: ``"drop"`` (the default: elimination only), ``"swap"`` or ``"soft"``
            (the paper's rectifications of the wrong rows' teacher logits).
        bias_weighting: how the right and rectified terms are weighed: ``"subset"`` (the
            paper's per-subset means, weights b and 1 - b) or ``"sample"`` (each row's term
            weighted b or 1 - b, over the batch size); see ``bias_aware_distillation``.
    """

    method: str = "kd"
    bias_aware: bool = True
    ce_weight: float = 0.5
    temperature: float = 4.0
    alpha: float = 1.0
    beta: float = 8.0
    warmup_epochs: int | None = None
    schedule: str = "cos2"
    rectification: str = "drop"
    bias_weighting: str = "subset"

    def __post_init__(self) -> None:
        choices = {
            "schedule": SCHEDULES,
            "rectification": RECTIFICATIONS,
            "bias_weighting": WEIGHTINGS,
        }
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"method must be a loss method's name; got {self.method!r}")
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
