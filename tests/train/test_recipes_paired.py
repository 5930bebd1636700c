"""``--method auto`` decides with a paired test on the same validation images (#25 item 4)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from compressor.losses.total import LossConfig
from compressor.report.formatting import recipe_decision
from compressor.train.recipes import (
    DEFAULT_RECIPES,
    PilotRow,
    RecipeChoice,
    choose_and_train,
    choose_winner,
    mcnemar,
    noise_margin,
)


def _table(images: int, both: int, lost: int, gained: int) -> tuple[str, str]:
    """Incumbent and challenger correctness strings with the given agreement table."""
    neither = images - both - lost - gained
    incumbent = "1" * both + "1" * lost + "0" * gained + "0" * neither
    challenger = "1" * both + "0" * lost + "1" * gained + "0" * neither
    return incumbent, challenger


def test_exact_p_values_by_hand() -> None:
    assert mcnemar("000", "111")["p_value"] == pytest.approx(1 / 8)  # 3 of 3 gained
    assert mcnemar("100", "011")["p_value"] == pytest.approx(4 / 8)  # 2 gained, 1 lost
    assert mcnemar("10", "10")["p_value"] == 1.0  # no discordant image
    test = mcnemar(*_table(20, 5, 1, 4))
    assert (test["lost"], test["gained"]) == (1, 4)
    assert test["p_value"] == pytest.approx((math.comb(5, 4) + math.comb(5, 5)) / 32)
    with pytest.raises(ValueError, match="same images"):
        mcnemar("101", "10")


@pytest.mark.parametrize(
    ("lost", "gained", "switches"),
    [
        (20, 50, True),  # +3.0 points at 1,000 images, few disagreements: a real gain
        (100, 130, True),  # +3.0 points, many disagreements: p = 0.03
        (150, 165, False),  # +1.5 points among 315 disagreements: noise
        (40, 45, False),  # +0.5 points
        (50, 40, False),  # the challenger is worse
    ],
)
def test_switches_at_a_real_difference_not_at_noise(lost: int, gained: int, switches: bool):
    incumbent, challenger = _table(1000, 550, lost, gained)
    held = PilotRow("kd", incumbent.count("1") / 1000, 2, 1.0, incumbent)
    other = PilotRow("kd+bias", challenger.count("1") / 1000, 2, 1.0, challenger)
    winner, margin, test = choose_winner([held, other], "kd", 1000)
    assert (winner == "kd+bias") == switches and margin == 0.0
    if gained > lost:
        assert other.val_top1 > held.val_top1 and test is not None
        assert test["challenger"] == "kd+bias"
    else:
        assert test is None  # the incumbent is the best pilot: nothing to test


def test_the_paired_test_switches_where_the_unpaired_margin_could_not() -> None:
    """+3 points at 1,000 images: inside the unpaired margin (4.3 points), decisive paired."""
    incumbent, challenger = _table(1000, 580, 20, 50)
    held = PilotRow("kd", 0.60, 2, 1.0, incumbent)
    other = PilotRow("kd+bias", 0.63, 2, 1.0, challenger)
    assert noise_margin(0.63, 0.60, 1000) > 0.63 - 0.60
    assert choose_winner([held, other], "kd", 1000)[0] == "kd+bias"
    unpaired = [PilotRow("kd", 0.60, 2, 1.0), PilotRow("kd+bias", 0.63, 2, 1.0)]
    assert choose_winner(unpaired, "kd", 1000)[0] == "kd"  # the fallback keeps kd


class CorrectnessTrainer:
    """A stub trainer whose pilots return per-image correctness, as distill does."""

    def __init__(self, correct: dict[tuple[str, bool], str]) -> None:
        self.correct = correct

    def __call__(self, loss: LossConfig, checkpoint: Path, stop_after: int | None):
        text = self.correct[(loss.method, loss.bias_aware)]
        flags = torch.tensor([c == "1" for c in text])
        return SimpleNamespace(best_val_top1=float(flags.float().mean()), best_val_correct=flags)


def test_pilots_record_their_correctness_and_the_choice_records_the_test(tmp_path: Path):
    incumbent, challenger = _table(400, 200, 5, 30)
    trainer = CorrectnessTrainer(
        {("ce", False): "0" * 400, ("kd", False): incumbent, ("kd", True): challenger}
    )
    plain = LossConfig(bias_aware=False)  # plain kd is the incumbent
    _, choice = choose_and_train(DEFAULT_RECIPES, plain, 10, trainer, tmp_path, val_images=400)
    assert choice.winner == "kd+bias" and choice.pilots[1].val_correct == incumbent
    assert choice.test["gained"] == 30 and choice.test["lost"] == 5
    assert RecipeChoice.from_dict(choice.to_dict()) == choice
    line = recipe_decision(choice.to_dict())
    assert "paired McNemar test of kd+bias against kd" in line and line.endswith("switched")


def test_distill_returns_per_image_correctness_at_the_best_epoch(digits_splits, teacher_path):
    from compressor.models.checkpoint import load_bundle
    from compressor.models.registry import build_model
    from compressor.train.loop import TrainConfig, distill

    torch.manual_seed(0)
    result = distill(
        load_bundle(teacher_path).model, build_model("cifar_resnet8_w8", 10, 1), digits_splits,
        (0.5,), (0.5,), LossConfig(), TrainConfig(epochs=1, batch_size=128, device="cpu"),
    )  # fmt: skip
    correct = result.best_val_correct
    assert correct is not None and correct.dtype == torch.bool
    assert len(correct) == len(digits_splits.val)
    assert float(correct.float().mean()) == pytest.approx(result.best_val_top1)
    assert "best_val_correct" not in result.to_dict()
