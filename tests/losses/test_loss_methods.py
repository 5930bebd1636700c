"""The loss-method registry and its smallest entry, ``mse``: one file and one registration."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from compressor.losses import methods as loss_methods
from compressor.losses.methods import get_method, method_names, methods_help, registered_methods
from compressor.losses.methods.base import LossMethod
from compressor.losses.methods.mse import mse_per_sample
from compressor.losses.total import DistillationLoss, LossConfig
from compressor.models.registry import build_model
from compressor.train.loop import TrainConfig, distill
from compressor.train.recipes import DEFAULT_RECIPES, RECIPES, parse_recipes, recipe_loss

ROOT = Path(__file__).resolve().parents[2]
S = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
T = torch.tensor([[1.0, 0.0, 0.0], [2.0, -1.0, 1.0]])
Y = torch.tensor([2, 0])


# ---------------------------------------------------------------- mse, by hand


def test_mse_hand_computed_on_a_2x3_batch() -> None:
    # row 1: differences (0, 2, 3) -> (0 + 4 + 9) / 3 = 13/3
    # row 2: differences (-2, 1, -1) -> (4 + 1 + 1) / 3 = 2
    rows = mse_per_sample(S, T, Y, LossConfig(method="mse"))
    torch.testing.assert_close(rows, torch.tensor([13 / 3, 2.0]))
    batch = get_method("mse").batch_loss(S, T, Y, LossConfig(method="mse"))
    assert batch.item() == pytest.approx(19 / 6)


def test_mse_through_the_training_loss_adds_the_ce_term() -> None:
    ce = ((math.log(math.e + math.e**2 + math.e**3) - 3) + math.log(3)) / 2  # labels 2 and 0
    out = DistillationLoss(LossConfig(method="mse", bias_aware=False, ce_weight=0.25), 10)(
        S, T, Y, 0
    )
    assert out.terms["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert out.terms["distill"].item() == pytest.approx(19 / 6, rel=1e-6)
    assert out.loss.item() == pytest.approx(0.25 * ce + 0.75 * 19 / 6, rel=1e-6)
    assert out.counters == {}  # no warm-up, no bias wrapper
    empty = DistillationLoss(LossConfig(method="mse"), 10)(
        torch.zeros(0, 3, requires_grad=True),
        torch.zeros(0, 3),
        torch.zeros(0, dtype=torch.long),
        0,
    )
    assert empty.loss.item() == 0.0


def test_mse_trains_a_student_to_the_teacher_through_distillation_loss() -> None:
    torch.manual_seed(0)
    teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
    x = torch.randn(64, 4)
    y = torch.randint(0, 3, (64,))
    loss_fn = DistillationLoss(LossConfig(method="mse", ce_weight=0.0), 10)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    with torch.no_grad():
        t_logits = teacher(x)
    first = None
    for _ in range(300):
        out = loss_fn(student(x), t_logits, y, 0)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        first = first if first is not None else out.terms["distill"].item()
    assert teacher.weight.grad is None  # the teacher is detached
    assert out.terms["distill"].item() < 1e-3 * first
    torch.testing.assert_close(student.weight, teacher.weight, atol=1e-2, rtol=0)


def test_mse_is_bias_aware_through_the_registry() -> None:
    s, t = torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), T.new_zeros(6, 4)
    t[:, 1] = 5.0  # the teacher says class 1 for every row
    y = torch.tensor([1, 1, 1, 0, 0, 0])  # right on the first three rows
    out = DistillationLoss(
        LossConfig(method="mse", bias_aware=True, rectification="swap", schedule="constant"), 4
    )(s, t, y, 0)
    rect = t.clone()
    rect[3:, 0], rect[3:, 1] = 5.0, 0.0  # swap: the label's logit and the predicted one
    right = mse_per_sample(s[:3], t[:3], y[:3], LossConfig()).mean()
    rectified = mse_per_sample(s[3:], rect[3:], y[3:], LossConfig()).mean()
    torch.testing.assert_close(out.terms["right"], right)
    torch.testing.assert_close(out.terms["rectified"], rectified)
    torch.testing.assert_close(out.terms["distill"], 0.5 * right + 0.5 * rectified)
    assert int(out.counters["n_wrong"]) == 3 and float(out.counters["b"]) == 0.5


def test_distill_runs_the_mse_method(digits_splits, teacher_path: Path) -> None:
    from compressor.models.checkpoint import load_bundle

    torch.manual_seed(0)
    result = distill(
        load_bundle(teacher_path).model, build_model("cifar_resnet8_w8", 10, 1), digits_splits,
        (0.5,), (0.5,), LossConfig(method="mse", bias_aware=False),
        TrainConfig(epochs=1, batch_size=128, device="cpu"),
    )  # fmt: skip
    row = result.history[0]
    assert row["distill"] > 0.0 and row["b"] is None and row["n_rectified"] == 0
    assert math.isfinite(row["loss"])


# ---------------------------------------------------------------- the registry


def test_registered_methods_and_the_recipes_derived_from_them() -> None:
    assert method_names() == ("ce", "kd", "dkd", "mse")
    fixed = ["+bias(swap)", "+bias(soft)", "+bias(drop)"]  # one rectification, whatever the base
    assert list(RECIPES) == [
        "ce", *(f"{m}{suffix}" for m in ("kd", "dkd", "mse") for suffix in ("", "+bias", *fixed))
    ]  # fmt: skip
    assert DEFAULT_RECIPES == ("ce", "kd", "kd+bias")
    for name, recipe in RECIPES.items():
        loss = recipe_loss(name, LossConfig())
        assert (loss.method, loss.bias_aware) == (recipe["method"], "+bias" in name)
    assert "ce+bias" not in RECIPES  # ce has no teacher term to remove bias from
    assert parse_recipes("kd,mse+bias") == ("kd", "mse+bias")  # registered: a recipe too


def test_methods_help_has_one_line_per_method() -> None:
    text = methods_help()
    for method in registered_methods():
        assert f"{method.name}: {method.help}" in text
    assert text.count("; ") == len(method_names()) - 1


def test_unknown_method_names_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"method must be one of \('ce', 'kd', 'dkd', 'mse'\)"):
        DistillationLoss(LossConfig(method="fitnet"), 10)  # the registry checks, not the config
    with pytest.raises(ValueError, match="'nope'"):
        get_method("nope")


def test_loss_method_entries_are_checked() -> None:
    with pytest.raises(ValueError, match="name"):
        LossMethod(name="kd+bias", help="a recipe, not a method", per_sample=mse_per_sample)
    with pytest.raises(ValueError, match="per-sample"):
        LossMethod(name="batch_only", help="x", batch_mean=lambda s, t, y, c: s.sum())
    with pytest.raises(ValueError, match="registered twice"):
        loss_methods._index((get_method("kd"), get_method("kd")))
    no_term = LossMethod(name="none", help="x", supports_bias_aware=False)
    assert not no_term.distills
    with pytest.raises(ValueError, match="no distillation term"):
        no_term.batch_loss(S, T, Y, LossConfig())


def test_loss_and_loop_never_compare_a_method_name() -> None:
    """What differs between methods comes from the registry: no ``method == "..."`` (or
    ``in (...)``) in the training loss or the loop."""
    files = ("losses/total.py", "train/loop.py", "train/step.py", "train/setup.py",
             "train/teacher_pass.py")  # fmt: skip
    for name in files:
        tree = ast.parse((ROOT / "compressor" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                named = [o for o in operands if isinstance(o, ast.Attribute | ast.Name)]
                assert not any(getattr(o, "attr", getattr(o, "id", "")) == "method"
                               for o in named), f"{name}:{node.lineno}"  # fmt: skip
