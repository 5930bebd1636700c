"""``--method auto``: pilots, the choice on validation, the winner continued from its pilot."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from compressor.cli.main import app
from compressor.errors import CompressorError
from compressor.losses.total import LossConfig
from compressor.models.checkpoint import load_bundle
from compressor.models.registry import build_model
from compressor.train.loop import TrainConfig, distill
from compressor.train.recipes import (
    DEFAULT_RECIPES,
    PilotRow,
    RecipeChoice,
    choose_and_train,
    choose_winner,
    incumbent_recipe,
    noise_margin,
    parse_recipes,
    pilot_epochs,
    recipe_loss,
)
from tests.conftest import write_profile


class StubTrainer:
    """Records every call; a pilot's validation top-1 comes from ``scores``."""

    def __init__(self, scores: dict[tuple[str, bool], float]) -> None:
        self.scores = scores
        self.calls: list[tuple[str, bool, str, int | None]] = []

    def __call__(self, loss: LossConfig, checkpoint: Path, stop_after: int | None):
        self.calls.append((loss.method, loss.bias_aware, checkpoint.name, stop_after))
        score = self.scores[(loss.method, loss.bias_aware)]
        return SimpleNamespace(best_val_top1=score if stop_after else score + 0.1)


def test_the_best_pilot_on_validation_is_continued_from_its_checkpoint(tmp_path: Path) -> None:
    trainer = StubTrainer({("ce", False): 0.50, ("kd", False): 0.62, ("kd", True): 0.58})
    seen: list[PilotRow] = []
    final, choice = choose_and_train(
        DEFAULT_RECIPES,
        LossConfig(bias_aware=False, temperature=3.0),
        10,
        trainer,
        tmp_path,
        on_pilot=seen.append,
    )
    assert trainer.calls == [
        ("ce", False, "pilot_ce.pt", 2),
        ("kd", False, "pilot_kd.pt", 2),
        ("kd", True, "pilot_kd+bias.pt", 2),
        ("kd", False, "pilot_kd.pt", None),  # the winner, resumed from its pilot to the end
    ]
    assert choice.winner == "kd" and final.best_val_top1 == pytest.approx(0.72)
    assert [r.recipe for r in seen] == ["ce", "kd", "kd+bias"]
    assert [r.val_top1 for r in choice.pilots] == [0.50, 0.62, 0.58]
    assert (choice.pilot_epochs, choice.total_epochs) == (2, 10)
    assert RecipeChoice.from_dict(json.loads(json.dumps(choice.to_dict()))) == choice


def test_ties_keep_the_incumbent_and_finished_pilots_are_not_rerun(tmp_path: Path) -> None:
    trainer = StubTrainer({("ce", False): 0.6, ("kd", False): 0.6, ("kd", True): 0.6})
    done = {"ce": PilotRow("ce", 0.6, 2, 5.0)}
    plain = LossConfig(bias_aware=False)  # plain kd is the incumbent
    _, choice = choose_and_train(DEFAULT_RECIPES, plain, 10, trainer, tmp_path, done)
    assert [c[2] for c in trainer.calls] == ["pilot_kd.pt", "pilot_kd+bias.pt", "pilot_kd.pt"]
    assert choice.winner == "kd" == choice.incumbent and choice.pilots[0].seconds == 5.0


@pytest.mark.parametrize(
    ("challenger", "val_images", "winner"),
    [
        (0.63, 1000, "kd"),  # +3.0 points, margin 4.26: noise, the incumbent stays
        (0.66, 1000, "kd+bias"),  # +6.0 points, margin 4.22: a real gain
        (0.63, None, "kd+bias"),  # no split size given: no margin
        (0.63, 100_000, "kd+bias"),  # a large split tells 3 points apart
    ],
)
def test_a_challenger_must_beat_the_incumbent_by_more_than_validation_noise(
    tmp_path: Path, challenger: float, val_images: int | None, winner: str
) -> None:
    trainer = StubTrainer({("ce", False): 0.50, ("kd", False): 0.60, ("kd", True): challenger})
    _, choice = choose_and_train(
        DEFAULT_RECIPES, LossConfig(bias_aware=False), 10, trainer, tmp_path, val_images=val_images
    )
    assert choice.incumbent == "kd" and choice.winner == winner
    assert trainer.calls[-1][:2] == (("kd", True) if winner == "kd+bias" else ("kd", False))
    expected = (
        1.96 * math.sqrt((challenger * (1 - challenger) + 0.24) / val_images) if val_images else 0.0
    )
    assert choice.margin == pytest.approx(expected)


def test_the_incumbent_is_the_configured_loss() -> None:
    assert incumbent_recipe(DEFAULT_RECIPES, LossConfig()) == "kd+bias"  # elimination, default
    assert incumbent_recipe(DEFAULT_RECIPES, LossConfig(bias_aware=False)) == "kd"
    assert incumbent_recipe(("dkd", "dkd+bias"), LossConfig()) == "dkd"  # kd not piloted: first
    assert noise_margin(0.5, 0.5, 100) == pytest.approx(1.96 * math.sqrt(0.5 / 100))
    rows = [PilotRow("ce", 0.9, 2, 1.0), PilotRow("kd", 0.5, 2, 1.0)]
    assert choose_winner(rows, "kd", 10) == (
        "ce", pytest.approx(noise_margin(0.9, 0.5, 10)), None,
    )  # fmt: skip


def test_pilot_length_and_recipe_parsing() -> None:
    assert [pilot_epochs(n) for n in (1, 2, 3, 5, 10, 30, 100)] == [1, 1, 1, 1, 2, 6, 20]
    assert parse_recipes(None) == ("ce", "kd", "kd+bias")
    assert parse_recipes(" kd , dkd+bias ") == ("kd", "dkd+bias")
    for bad in ("kd", "kd,kd", "kd,fitnet", ""):  # fitnet: not a registered method
        with pytest.raises(CompressorError, match="two or more distinct recipes"):
            parse_recipes(bad)
    soft = recipe_loss("dkd+bias", LossConfig(rectification="soft", temperature=2.0))
    assert (soft.method, soft.bias_aware, soft.rectification, soft.temperature) == (
        "dkd", True, "soft", 2.0,
    )  # fmt: skip
    # a fixed rectification overrides the base's; kd+bias keeps it, so both can be piloted
    assert parse_recipes("kd+bias,kd+bias(drop)") == ("kd+bias", "kd+bias(drop)")
    base = LossConfig(bias_aware=False, rectification="swap")
    assert recipe_loss("kd+bias(drop)", base).rectification == "drop"
    assert recipe_loss("kd+bias", base).rectification == "swap"
    assert (
        incumbent_recipe(("kd", "kd+bias(drop)"), LossConfig(bias_aware=True, rectification="drop"))
        == "kd+bias(drop)"
    )


def test_a_continued_pilot_equals_an_uninterrupted_run(small_digits_splits, teacher_path, tmp_path):
    """Why the winner's pilot is not wasted: stopping after 1 of 3 epochs and continuing
    from the checkpoint gives the same weights as training 3 epochs at once."""
    digits_splits = small_digits_splits  # equality of weights, whatever the data
    teacher = load_bundle(teacher_path).model
    cfg = TrainConfig(epochs=3, batch_size=128, device="cpu", bn_recalibration_images=128)

    def run(stop_after: int | None, checkpoint: Path | None):
        torch.manual_seed(0)
        student = build_model("cifar_resnet8_w16", 10, 1)
        train = TrainConfig(**{**cfg.__dict__, "stop_after": stop_after})
        return distill(teacher, student, digits_splits, (0.5,), (0.5,), LossConfig(), train,
                       checkpoint=checkpoint, resume=True)  # fmt: skip

    whole = run(None, None)
    ckpt = tmp_path / "pilot.pt"
    pilot = run(1, ckpt)
    assert len(pilot.history) == 1
    continued = run(None, ckpt)
    assert continued.resumed_from_epoch == 1 and len(continued.history) == 3
    for key, value in whole.student.state_dict().items():
        assert torch.equal(value, continued.student.state_dict()[key]), key


def test_run_with_method_auto_reports_the_pilots(teacher_path, digits_root, tmp_path) -> None:
    out = tmp_path / "run"
    profile = write_profile(tmp_path / "p.toml")
    args = ["run", "--teacher", str(teacher_path), "--data", str(digits_root), "--profile",
            str(profile), "--out", str(out), "--epochs", "3", "--batch-size", "128",
            "--candidates", "cifar_resnet8_w16", "--device", "cpu", "--method", "auto",
            "--auto-recipes", "kd,kd+bias"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    report = json.loads((out / "report.json").read_text())
    choice = report["distillation"]["recipe_choice"]
    assert [p["recipe"] for p in choice["pilots"]] == ["kd", "kd+bias"]
    assert choice["pilot_epochs"] == 1 and choice["total_epochs"] == 3
    best = max(choice["pilots"], key=lambda p: p["val_top1"])["val_top1"]
    winner = next(p for p in choice["pilots"] if p["recipe"] == choice["winner"])
    assert choice["incumbent"] == "kd+bias"  # the default loss: KD with elimination
    if choice["winner"] != choice["incumbent"]:  # a switch needs the best pilot, beyond chance
        assert winner["val_top1"] == best and choice["test"]["p_value"] < 0.05
    elif winner["val_top1"] < best:  # kept although beaten: the paired test said noise
        assert choice["test"]["p_value"] >= 0.05
    loss = report["distillation"]["loss"]
    assert (loss["method"], loss["bias_aware"]) == ("kd", choice["winner"] == "kd+bias")
    assert len(report["distillation"]["history"]) == 3  # the pilot's epoch plus two more
    assert json.loads((out / "pilot.json").read_text())["pilots"] == choice["pilots"]
    kept = sorted(p.name for p in out.glob("pilot_*.pt"))
    assert kept == [f"pilot_{choice['winner']}.pt"]  # the losers' states are deleted
    assert "recipe chosen on the validation split" in (out / "report.md").read_text()
    assert "Recipe chosen on the validation split" in (out / "report.html").read_text()

    resumed = CliRunner().invoke(app, ["run", "--resume", "--out", str(out)])
    assert resumed.exit_code in (0, 1), resumed.output
    again = json.loads((out / "report.json").read_text())
    assert again["distillation"]["recipe_choice"] == choice

    bad = CliRunner().invoke(app, [*args[:-2], "--auto-recipes", "kd,kd"])
    assert bad.exit_code == 2 and "two or more distinct recipes" in bad.output
