"""``--bias-weighting sample``: each row weighted b or 1 - b over the batch size (#25).

Hand values use a toy base loss, the row sum of the student's logits (mean over rows for the
reference, per row for the batched path), so every expected number is simple arithmetic.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from compressor.losses.bias_aware import bias_aware_distillation
from compressor.losses.methods.kd import kd_per_sample
from compressor.losses.total import DistillationLoss, LossConfig
from tests.reference_losses import kd_loss, reference_bias_aware

# Teacher right on row 1 only (argmax 1 = label 1); wrong on rows 0, 2 and 3.
TEACHER = torch.tensor([[3.0, 1.0, 2.0], [0.0, 4.0, 2.0], [0.0, 4.0, 2.0], [-3.0, 2.0, -5.0]])
TARGET = torch.tensor([2, 1, 2, 0])
STUDENT = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [3.0, 0.0, 0.0], [4.0, 0.0, 0.0]])


def _row_sum(s: Tensor, t: Tensor, y: Tensor) -> Tensor:
    return s.sum(1)


def _row_sum_mean(s: Tensor, t: Tensor, y: Tensor) -> Tensor:
    return s.sum(1).mean() if len(s) else s.sum() * 0.0


@pytest.mark.parametrize(
    ("rectification", "weighting", "expected"),
    [
        # subset: 0.25 * mean(2) + 0.75 * mean(1, 3, 4) = 0.5 + 2.0
        ("swap", "subset", 2.5),
        # sample: (0.25 * 2 + 0.75 * (1 + 3 + 4)) / 4 = 6.5 / 4
        ("swap", "sample", 1.625),
        # drop, subset: the right rows' mean alone
        ("drop", "subset", 2.0),
        # drop, sample: kept rows weigh 1, dropped rows 0, over the batch: 2 / 4
        ("drop", "sample", 0.5),
    ],
)
def test_hand_values(rectification: str, weighting: str, expected: float) -> None:
    ref = reference_bias_aware(
        STUDENT, TEACHER, TARGET, _row_sum_mean, 0.25, rectification, weighting
    )
    fast = bias_aware_distillation(
        STUDENT, TEACHER, TARGET, _row_sum, 0.25, rectification, weighting
    )
    assert ref["distill"].item() == pytest.approx(expected)
    assert fast["distill"].item() == pytest.approx(expected)
    assert ref["right"].item() == fast["right"].item() == 2.0  # the subset means are reported
    assert int(ref["n_wrong"]) == int(fast["n_wrong"]) == 3


def test_sample_weighting_keeps_the_rectified_share_late_in_the_schedule() -> None:
    """Late in cos^2 (b near 0) the subset mean hands the whole term to the wrong rows'
    average; per sample, the term shrinks with their share of the batch instead."""
    b = 0.01
    subset = reference_bias_aware(STUDENT, TEACHER, TARGET, _row_sum_mean, b, "swap")
    sample = reference_bias_aware(STUDENT, TEACHER, TARGET, _row_sum_mean, b, "swap", "sample")
    assert subset["distill"].item() == pytest.approx(0.01 * 2 + 0.99 * 8 / 3)
    assert sample["distill"].item() == pytest.approx((0.01 * 2 + 0.99 * 8) / 4)


@pytest.mark.parametrize("rectification", ["swap", "soft", "drop"])
@pytest.mark.parametrize("b", [0.0, 0.37, 1.0])
def test_batched_sample_weighting_equals_the_reference_with_kd(rectification: str, b: float):
    g = torch.Generator().manual_seed(3)
    s = (torch.randn(17, 7, generator=g) * 3).requires_grad_()
    t = torch.randn(17, 7, generator=g) * 3
    y = torch.randint(0, 7, (17,), generator=g)
    ref = reference_bias_aware(
        s, t, y, lambda a, c, _y: kd_loss(a, c, 4.0), b, rectification, "sample"
    )
    fast = bias_aware_distillation(
        s, t, y, lambda a, c, _y: kd_per_sample(a, c, 4.0), b, rectification, "sample"
    )
    torch.testing.assert_close(fast["distill"], ref["distill"], rtol=1e-5, atol=1e-6)
    g_ref = torch.autograd.grad(ref["distill"], s)[0]
    g_fast = torch.autograd.grad(fast["distill"], s)[0]
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-5, atol=1e-6)


def test_loss_module_passes_the_weighting_and_validates_it() -> None:
    cfg = LossConfig(bias_aware=True, bias_weighting="sample", ce_weight=0.0)
    loss = DistillationLoss(cfg, total_epochs=4)
    out = loss(STUDENT, TEACHER, TARGET, 0)  # epoch 0: b = 1
    per_row = kd_per_sample(STUDENT, TEACHER, 4.0)  # the right row is never rectified
    torch.testing.assert_close(out.loss, per_row[1] / 4)  # b=1: the right row over N=4
    with pytest.raises(ValueError, match="bias_weighting must be one of"):
        LossConfig(bias_weighting="batch")
