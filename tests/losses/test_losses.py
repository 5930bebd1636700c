"""Tests for compressor.losses.total: hand-computed values, references, edge cases, gradient
flow."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from compressor.losses.bias_aware import (
    bias_aware_distillation,
    bias_weight,
    rectify_teacher_logits,
)
from compressor.losses.methods.dkd import dkd_loss, dkd_per_sample
from compressor.losses.methods.kd import kd_per_sample
from compressor.losses.total import DistillationLoss, LossConfig, auto_warmup_epochs
from tests.reference_losses import kd_loss, reference_bias_aware

LN = math.log


def _np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _kd(s: Tensor, t: Tensor, y: Tensor, temperature: float = 4.0) -> Tensor:
    return kd_loss(s, t, temperature)


def _dkd(s: Tensor, t: Tensor, y: Tensor) -> Tensor:
    return dkd_loss(s, t, y, 1.0, 8.0, 4.0)


BASES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {"kd": _kd, "dkd": _dkd}


def _all_right_batch(n: int = 6, c: int = 5, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g)
    t = torch.randn(n, c, generator=g)
    return s, t, t.argmax(dim=1)


def _all_wrong_batch(n: int = 6, c: int = 5, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    s, t, pred = _all_right_batch(n, c, seed)
    return s, t, (pred + 1) % c


# ---------------------------------------------------------------- hand-computed values


def test_kd_hand_computed_closed_form() -> None:
    # Row 1: teacher uniform [1/2, 1/2], student [3/4, 1/4] -> KL = 1/2 ln(4/3).
    # Row 2: identical distributions -> 0.  Row 3: teacher [3/4, 1/4], student uniform.
    # T = 2, so logits are scaled by 2 and the mean is multiplied by 4.
    t = torch.tensor([[0.0, 0.0], [1.0, 3.0], [2 * LN(3), 0.0]])
    s = torch.tensor([[2 * LN(3), 0.0], [1.0, 3.0], [0.0, 0.0]])
    row1 = 0.5 * LN(4 / 3)
    row3 = 0.75 * LN(0.75 / 0.5) + 0.25 * LN(0.25 / 0.5)
    expected = 4.0 * (row1 + 0.0 + row3) / 3
    assert kd_loss(s, t, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_kd_hand_computed_numpy() -> None:
    s = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0], [0.3, 0.1, -0.2]])
    t = np.array([[3.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.5, 4.0, -2.0], [0.0, 0.2, 0.1]])
    temp = 3.0
    p_t, p_s = _np_softmax(t / temp), _np_softmax(s / temp)
    expected = (p_t * np.log(p_t / p_s)).sum(axis=1).mean() * temp**2
    got = kd_loss(torch.tensor(s), torch.tensor(t), temp)
    assert got.item() == pytest.approx(float(expected), rel=1e-6)


def test_dkd_hand_computed_closed_form() -> None:
    # Sample 1 (y=0, T=1): teacher uniform -> b_t=1/3, others [1/2, 1/2];
    # student exp = [1, 2, 1]/4 -> b_t=1/4, others [2/3, 1/3].
    # Sample 2: student == teacher -> 0.
    t = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    s = torch.tensor([[0.0, LN(2), 0.0], [1.0, 2.0, 3.0]])
    y = torch.tensor([0, 2])
    tckd = (1 / 3) * LN((1 / 3) / (1 / 4)) + (2 / 3) * LN((2 / 3) / (3 / 4))
    nckd = 0.5 * LN(0.5 / (2 / 3)) + 0.5 * LN(0.5 / (1 / 3))
    expected = (2.0 * tckd + 8.0 * nckd) / 2
    assert dkd_loss(s, t, y, 2.0, 8.0, 1.0).item() == pytest.approx(expected, rel=1e-6)


def _dkd_reference(
    s: Tensor, t: Tensor, y: Tensor, alpha: float, beta: float, temp: float
) -> float:
    """DKD written literally from the paper, float64, one sample at a time."""
    total = 0.0
    for z_s, z_t, label in zip(s.double(), t.double(), y.tolist(), strict=True):
        p_s, p_t = torch.softmax(z_s / temp, 0), torch.softmax(z_t / temp, 0)
        bt_s, bt_t = p_s[label], p_t[label]
        tckd = bt_t * torch.log(bt_t / bt_s) + (1 - bt_t) * torch.log((1 - bt_t) / (1 - bt_s))
        keep = torch.arange(len(z_s)) != label
        q_s, q_t = p_s[keep] / (1 - bt_s), p_t[keep] / (1 - bt_t)
        nckd = (q_t * torch.log(q_t / q_s)).sum()
        total += float(alpha * tckd + beta * nckd)
    return total / len(y) * temp**2


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("alpha", "beta", "temp"), [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_paper_reference(seed: int, alpha: float, beta: float, temp: float) -> None:
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(8, 10, generator=g) * 3, torch.randn(8, 10, generator=g) * 3
    y = torch.randint(0, 10, (8,), generator=g)
    got = dkd_loss(s, t, y, alpha, beta, temp).item()
    assert got == pytest.approx(_dkd_reference(s, t, y, alpha, beta, temp), rel=1e-5, abs=1e-5)


def test_dkd_extreme_logits_are_finite() -> None:
    s = torch.tensor([[200.0, -200.0, 0.0], [-300.0, 300.0, 5.0]], requires_grad=True)
    t = torch.tensor([[-500.0, 500.0, 0.0], [0.0, 0.0, 900.0]])
    loss = dkd_loss(s, t, torch.tensor([0, 1]), 1.0, 8.0, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("fn", [lambda s, t, y: kd_loss(s, t, 4.0), _dkd])
def test_empty_batch_gives_connected_zero(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    s = torch.zeros(0, 4, requires_grad=True)
    loss = fn(s, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert s.grad is not None and s.grad.shape == (0, 4)


@pytest.mark.parametrize("method", ["kd", "dkd", "ce"])
@pytest.mark.parametrize("bias_aware", [True, False])
def test_module_empty_batch(method: str, bias_aware: bool) -> None:
    s = torch.zeros(0, 4, requires_grad=True)
    cfg = LossConfig(method=method, bias_aware=bias_aware)
    out = DistillationLoss(cfg, 5)(s, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 1)
    assert out.loss.item() == 0.0 and out.terms["distill"].item() == 0.0
    out.loss.backward()
    assert s.grad is not None


# ---------------------------------------------------------------- rectification


TEACHER = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0], [0.0, 2.0, 4.0], [-3.0, 2.0, -5.0]])
TARGET = torch.tensor([0, 0, 1, 0])


def test_swap_exact() -> None:
    original = TEACHER.clone()
    out = rectify_teacher_logits(TEACHER, TARGET, "swap")
    expected = torch.tensor([[3.0, 1.0, 2.0], [5.0, 0.0, 1.0], [0.0, 4.0, 2.0], [2.0, -3.0, -5.0]])
    assert torch.equal(out, expected)
    assert torch.equal(TEACHER, original)  # not in place


def test_soft_exact_and_fallback() -> None:
    # Row 0: a=1, c=1.5, s=4/2.5 -> (1.6, 2.4). Row 2: a=1.5, c=2, s=6/3.5 -> (18/7, 24/7).
    # Row 3: a=-1, c=1, a+c=0 -> falls back to swap. Row 1 is right: unchanged.
    original = TEACHER.clone()
    out = rectify_teacher_logits(TEACHER, TARGET, "soft")
    expected = torch.tensor(
        [[1.6, 2.4, 2.0], [5.0, 0.0, 1.0], [0.0, 18 / 7, 24 / 7], [2.0, -3.0, -5.0]]
    )
    torch.testing.assert_close(out, expected)
    assert torch.equal(TEACHER, original)
    rows = torch.arange(4)
    pred = TEACHER.argmax(1)
    sums_in = TEACHER[rows, TARGET] + TEACHER[rows, pred]
    sums_out = out[rows, TARGET] + out[rows, pred]
    torch.testing.assert_close(sums_out, sums_in)


def test_rectify_rejects_drop_and_unknown() -> None:
    for mode in ("drop", "bogus"):
        with pytest.raises(ValueError, match="rectification mode"):
            rectify_teacher_logits(TEACHER, TARGET, mode)


# ---------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("cos2", (1.0, 0.5, math.cos(math.pi / 2 * 0.9) ** 2)),
        ("linear", (1.0, 0.5, 0.1)),
        ("constant", (0.5, 0.5, 0.5)),
    ],
)
def test_bias_weight_values(schedule: str, expected: tuple[float, float, float]) -> None:
    got = tuple(bias_weight(e, 10, schedule) for e in (0, 5, 9))
    assert got == pytest.approx(expected, abs=1e-12)
    if schedule == "cos2":
        assert got[2] == pytest.approx(0.02447174185, abs=1e-10)


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 0, "cos2"), "total_epochs"), ((-1, 5, "cos2"), "epoch"), ((5, 5, "cos2"), "epoch"),
     ((0, 5, "square"), "schedule")],
)  # fmt: skip
def test_bias_weight_validation(args: tuple[int, int, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bias_weight(*args)


# ---------------------------------------------------------------- bias-aware wrapper


@pytest.mark.parametrize("method", ["kd", "dkd"])
@pytest.mark.parametrize("rect", ["swap", "soft", "drop"])
@pytest.mark.parametrize("b", [1.0, 0.3])
def test_all_right_equals_base(method: str, rect: str, b: float) -> None:
    s, t, y = _all_right_batch()
    out = reference_bias_aware(s, t, y, BASES[method], b, rect)
    base = BASES[method](s, t, y)
    torch.testing.assert_close(out["distill"], base)
    assert out["n_wrong"].item() == 0 and out["rectified"].item() == 0.0


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_all_right_equals_base_through_module(method: str) -> None:
    s, t, y = _all_right_batch(seed=3)
    plain = DistillationLoss(LossConfig(method=method, bias_aware=False), 10)
    aware = DistillationLoss(LossConfig(method=method, bias_aware=True), 10)
    for epoch in (0, 4, 9):
        torch.testing.assert_close(aware(s, t, y, epoch).loss, plain(s, t, y, epoch).loss)


def test_mixed_batch_weights_and_counts() -> None:
    s = torch.randn(4, 3, generator=torch.Generator().manual_seed(7))
    out = reference_bias_aware(s, TEACHER, TARGET, _kd, 0.25, "swap")
    wrong = torch.tensor([True, False, True, True])
    l_right = kd_loss(s[~wrong], TEACHER[~wrong], 4.0)
    rect = torch.tensor([[3.0, 1.0, 2.0], [0.0, 4.0, 2.0], [2.0, -3.0, -5.0]])
    l_rect = kd_loss(s[wrong], rect, 4.0)
    assert out["n_wrong"].item() == 3
    torch.testing.assert_close(out["right"], l_right)
    torch.testing.assert_close(out["rectified"], l_rect)
    torch.testing.assert_close(out["distill"], 0.25 * l_right + 0.75 * l_rect)
    dropped = reference_bias_aware(s, TEACHER, TARGET, _kd, 0.25, "drop")
    torch.testing.assert_close(dropped["distill"], l_right)
    assert dropped["rectified"].item() == 0.0


@pytest.mark.parametrize("rect", ["swap", "soft", "drop"])
@pytest.mark.parametrize("make", [_all_right_batch, _all_wrong_batch])
@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_degenerate_batches_finite(rect: str, make: Callable, method: str) -> None:
    s, t, y = make(seed=5)
    s = s.clone().requires_grad_(True)
    loss_fn = DistillationLoss(LossConfig(method=method, bias_aware=True, rectification=rect), 10)
    out = loss_fn(s, t, y, epoch=3)
    out.loss.backward()
    assert all(torch.isfinite(v).all() for v in out.as_dict().values())
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    if make is _all_wrong_batch:
        assert out.counters["n_wrong"].item() == len(y) and out.terms["right"].item() == 0.0
        if rect == "drop":
            assert out.terms["distill"].item() == 0.0
            torch.testing.assert_close(out.loss, 0.5 * out.terms["ce"])


def test_b_one_on_all_wrong_batch_gives_zero() -> None:
    s, t, y = _all_wrong_batch()
    assert reference_bias_aware(s, t, y, _kd, 1.0, "swap")["distill"].item() == 0.0


def test_bias_aware_validates_b_and_mode() -> None:
    s, t, y = _all_right_batch()
    with pytest.raises(ValueError, match="b must be"):
        reference_bias_aware(s, t, y, _kd, 1.5)
    with pytest.raises(ValueError, match="rectification"):
        reference_bias_aware(s, t, y, _kd, 0.5, "flip")


# ---------------------------------------------------------------- module


def test_gradient_reaches_student_only() -> None:
    torch.manual_seed(0)
    teacher, student = nn.Linear(6, 4), nn.Linear(6, 4)
    teacher.eval()
    x = torch.randn(8, 6)
    y = torch.randint(0, 4, (8,))
    loss_fn = DistillationLoss(LossConfig(method="dkd"), 10)
    with torch.no_grad():
        t_nograd = teacher(x)
    t_grad = teacher(x)  # requires grad: must be detached inside
    assert t_grad.requires_grad
    for t_logits in (t_nograd, t_grad):
        student.zero_grad(set_to_none=True)
        loss_fn(student(x), t_logits, y, epoch=2).loss.backward()
        assert teacher.weight.grad is None and teacher.bias.grad is None
        assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0


def test_module_composition_and_dkd_warmup() -> None:
    s, t, y = _all_wrong_batch(seed=9)
    y[:3] = t[:3].argmax(1)  # mixed batch
    cfg = LossConfig(
        method="dkd", bias_aware=True, rectification="swap", ce_weight=0.3, warmup_epochs=20
    )
    loss_fn = DistillationLoss(cfg, 40)
    ce = torch.nn.functional.cross_entropy(s, y)
    for epoch, factor in ((0, 1 / 20), (9, 0.5), (19, 1.0), (30, 1.0)):
        out = loss_fn(s, t, y, epoch)
        b = bias_weight(epoch, 40)
        manual = reference_bias_aware(s, t, y, _dkd, b)["distill"]
        assert out.counters["warmup"].item() == pytest.approx(factor)
        assert out.counters["b"].item() == pytest.approx(b)
        torch.testing.assert_close(out.loss, 0.3 * ce + 0.7 * factor * manual)
    kd_out = DistillationLoss(LossConfig(method="kd", bias_aware=False), 40)(s, t, y, 0)
    torch.testing.assert_close(kd_out.loss, 0.5 * ce + 0.5 * kd_loss(s, t, 4.0))
    no_warm = DistillationLoss(LossConfig(method="dkd", bias_aware=False, warmup_epochs=0), 40)
    torch.testing.assert_close(no_warm(s, t, y, 0).loss, 0.5 * ce + 0.5 * _dkd(s, t, y))


def _dkd_warmup_factors(cfg: LossConfig, total: int) -> list[float]:
    s, t, y = _all_wrong_batch(seed=2)
    loss_fn = DistillationLoss(cfg, total)
    return [loss_fn(s, t, y, epoch).counters["warmup"].item() for epoch in range(total)]


@pytest.mark.parametrize(("total", "expected_w"), [(1, 1), (3, 1), (10, 2), (100, 20), (240, 20)])
@pytest.mark.parametrize("bias_aware", [True, False])
def test_dkd_auto_warmup_completes_within_the_schedule(
    total: int, expected_w: int, bias_aware: bool
) -> None:
    cfg = LossConfig(method="dkd", bias_aware=bias_aware)
    assert cfg.warmup_epochs is None  # the default scales with the schedule
    assert auto_warmup_epochs(total) == expected_w == cfg.effective_warmup_epochs(total)
    assert DistillationLoss(cfg, total).warmup_epochs == expected_w
    factors = _dkd_warmup_factors(cfg, total)
    expected = [min(1.0, (e + 1) / expected_w) for e in range(total)]
    assert factors == pytest.approx(expected)
    # Full weight by the end of the first quarter (epoch E // 4) and for the rest of the run.
    assert all(f == 1.0 for f in factors[total // 4 :])
    assert factors[-1] == 1.0


def test_dkd_auto_warmup_rule_over_many_schedules() -> None:
    for total in range(1, 400):
        w = auto_warmup_epochs(total)
        assert 1 <= w <= 20 and w - 1 <= total // 4 < total
    assert [auto_warmup_epochs(e) for e in (4, 7, 8, 40, 79, 80, 81)] == [1, 1, 2, 10, 19, 20, 20]
    with pytest.raises(ValueError, match="total_epochs"):
        auto_warmup_epochs(0)


def test_dkd_explicit_warmup_is_honoured() -> None:
    factors = _dkd_warmup_factors(LossConfig(method="dkd", warmup_epochs=7), 10)
    assert factors == pytest.approx([1 / 7, 2 / 7, 3 / 7, 4 / 7, 5 / 7, 6 / 7, 1, 1, 1, 1])
    assert _dkd_warmup_factors(LossConfig(method="dkd", warmup_epochs=0), 3) == [1.0, 1.0, 1.0]
    assert LossConfig(warmup_epochs=20).effective_warmup_epochs(10) == 20


def test_dkd_explicit_warmup_longer_than_the_schedule_warns_and_is_honoured() -> None:
    cfg = LossConfig(method="dkd", warmup_epochs=20)
    with pytest.warns(UserWarning, match="does not complete within 10 epochs.*0.50"):
        loss_fn = DistillationLoss(cfg, 10)
    assert loss_fn.warmup_epochs == 20
    s, t, y = _all_wrong_batch(seed=2)
    assert loss_fn(s, t, y, 9).counters["warmup"].item() == pytest.approx(0.5)


def test_warmup_that_fits_or_is_unused_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DistillationLoss(LossConfig(method="dkd", warmup_epochs=10), 10)
        DistillationLoss(LossConfig(method="kd", warmup_epochs=20), 10)  # KD has no warm-up
        DistillationLoss(LossConfig(method="dkd"), 1)


def test_method_ce_is_cross_entropy_only() -> None:
    s, t, y = _all_wrong_batch()
    out = DistillationLoss(LossConfig(method="ce", ce_weight=0.2), 10)(s, t, y, 0)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(s, y))
    assert out.terms["distill"].item() == 0.0 and "n_wrong" not in out.as_dict()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": ""}, "method"),  # a registered name is checked by the registry
        ({"method": None}, "method"),
        ({"bias_aware": 1}, "bias_aware"),
        ({"ce_weight": 1.5}, "ce_weight"),
        ({"ce_weight": -0.1}, "ce_weight"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"alpha": -1.0}, "alpha"),
        ({"beta": "8"}, "beta"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"warmup_epochs": 2.5}, "warmup_epochs"),
        ({"warmup_epochs": "auto"}, "warmup_epochs"),
        ({"warmup_epochs": True}, "warmup_epochs"),
        ({"schedule": "cos"}, "schedule"),
        ({"rectification": "flip"}, "rectification"),
    ],
)
def test_loss_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        LossConfig(**kwargs)


def test_loss_config_defaults_valid_and_module_validation() -> None:
    cfg = LossConfig()
    assert (cfg.method, cfg.temperature, cfg.ce_weight, cfg.beta) == ("kd", 4.0, 0.5, 8.0)
    # elimination by default: never worse than plain KD beyond noise (docs/benchmarks.md, #25)
    assert (cfg.bias_aware, cfg.rectification, cfg.warmup_epochs) == (True, "drop", None)
    with pytest.raises(ValueError, match="total_epochs"):
        DistillationLoss(cfg, 0)
    s, t, y = _all_right_batch()
    with pytest.raises(ValueError, match="epoch"):
        DistillationLoss(cfg, 5)(s, t, y, -1)


# ---------------------------------------------------------------- the batched (training) path

PER_SAMPLE: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "kd": lambda s, t, y: kd_per_sample(s, t, 4.0),
    "dkd": lambda s, t, y: dkd_per_sample(s, t, y, 1.0, 8.0, 4.0),
}


def _mixed_batch(n: int, c: int, seed: int, wrong_fraction: float) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(n, c, generator=g) * 3, torch.randn(n, c, generator=g) * 3
    y = t.argmax(1).clone()
    flip = torch.rand(n, generator=g) < wrong_fraction
    y[flip] = (y[flip] + 1 + torch.randint(0, c - 1, (int(flip.sum()),), generator=g)) % c
    return s.requires_grad_(), t, y


@pytest.mark.parametrize("method", ["kd", "dkd"])
@pytest.mark.parametrize("rect", ["swap", "soft", "drop"])
@pytest.mark.parametrize("wrong_fraction", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("b", [0.0, 0.37, 1.0])
def test_batched_equals_reference(method: str, rect: str, wrong_fraction: float, b: float) -> None:
    for seed in range(3):
        s, t, y = _mixed_batch(17, 7, seed, wrong_fraction)
        ref = reference_bias_aware(s, t, y, BASES[method], b, rect)
        fast = bias_aware_distillation(s, t, y, PER_SAMPLE[method], b, rect)
        for key in ("distill", "right", "rectified"):
            torch.testing.assert_close(fast[key], ref[key], rtol=1e-5, atol=1e-6)
        assert int(fast["n_wrong"]) == int(ref["n_wrong"])
        g_ref = torch.autograd.grad(ref["distill"], s, allow_unused=True)[0]
        g_fast = torch.autograd.grad(fast["distill"], s, allow_unused=True)[0]
        torch.testing.assert_close(
            g_fast if g_fast is not None else torch.zeros_like(s),
            g_ref if g_ref is not None else torch.zeros_like(s),
            rtol=1e-5, atol=1e-6,
        )  # fmt: skip


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_per_sample_means_are_the_losses(method: str) -> None:
    s, t, y = _mixed_batch(9, 5, 0, 0.5)
    torch.testing.assert_close(PER_SAMPLE[method](s, t, y).mean(), BASES[method](s, t, y))


@pytest.mark.parametrize("method", ["kd", "dkd"])
@pytest.mark.parametrize("bias_aware", [True, False])
@pytest.mark.parametrize("rect", ["swap", "soft", "drop"])
def test_training_loss_never_reads_device_values(method: str, bias_aware: bool, rect: str) -> None:
    """On the meta device any host read (.item(), int(), boolean indexing) raises: so a CUDA step
    computing this loss never waits for the GPU."""
    cfg = LossConfig(method=method, bias_aware=bias_aware, rectification=rect, warmup_epochs=2)
    s = torch.empty(32, 10, device="meta", requires_grad=True)
    t = torch.empty(32, 10, device="meta")
    y = torch.empty(32, dtype=torch.long, device="meta")
    out = DistillationLoss(cfg, 10)(s, t, y, epoch=3)
    out.loss.backward()
    assert s.grad is not None and s.grad.shape == s.shape
