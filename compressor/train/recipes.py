"""``--method auto``: the distillation recipe chosen on the user's own validation split.

Whether teacher-bias removal helps depends on the teacher and the data (docs/benchmarks.md),
so instead of trusting one default the run can measure: every candidate recipe trains a
short pilot, the first ``pilot_epochs`` epochs of the full schedule, from the same initial
weights and over the same batches. The *incumbent* (the recipe of the configured loss, ``kd+bias``
with elimination by default) keeps its place unless another pilot beats it on validation
top-1 (never test) beyond what the validation split can tell apart: short pilots
are noisy, and a recipe picked on noise was measured to cost up to 11 points at the end
(docs/benchmarks.md). The winner's pilot is continued from its checkpoint to the end of the
schedule, so its training is exactly what an uninterrupted run of that recipe would have
been and its pilot is not wasted. The cost is the losers' pilots.

The comparison is paired (:func:`mcnemar`): both pilots are scored on the *same* validation
images, so only the images on which they disagree carry information. An independent-samples
margin treats the two accuracies as unrelated and needs about 4 points at 1,000 images (10 at
150) before anything switches; the paired test switches at a real 2-3 point gain at 1,000
images and stays put on noise. Pilots recorded without per-image results (a run resumed from an
older version) fall back to the margin (:func:`noise_margin`).

The trainer is passed in, so this module decides and records, and the training loop stays
unaware of it (tests drive it with a stub trainer).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from compressor.config.loss import RECTIFICATIONS, LossConfig
from compressor.errors import CompressorError
from compressor.losses.methods import registered_methods
from compressor.run_folder import pilot_checkpoint


def _recipes_from_registry() -> dict[str, dict[str, Any]]:
    """A recipe is a registered method, ``<method>+bias`` with teacher-bias removal as the base
    loss configures it (its rectification and weighting), and ``<method>+bias(<rectification>)``
    with one rectification fixed, where the method supports bias removal; in registration order
    (ce, kd, kd+bias, kd+bias(swap), kd+bias(soft), kd+bias(drop), dkd, ...)."""
    recipes: dict[str, dict[str, Any]] = {}
    for method in registered_methods():
        recipes[method.name] = {"method": method.name, "bias_aware": False}
        if method.supports_bias_aware:
            recipes[f"{method.name}+bias"] = {"method": method.name, "bias_aware": True}
            for rectification in RECTIFICATIONS:
                recipes[f"{method.name}+bias({rectification})"] = {
                    "method": method.name,
                    "bias_aware": True,
                    "rectification": rectification,
                }
    return recipes


RECIPES: dict[str, dict[str, Any]] = _recipes_from_registry()
DEFAULT_RECIPES = ("ce", "kd", "kd+bias")
PILOT_FRACTION = 0.2  # of the schedule's epochs


def parse_recipes(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"kd,kd+bias"`` (or a list) -> checked recipe names; None -> the default set."""
    if text is None:
        return DEFAULT_RECIPES
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown or len(names) < 2 or len(set(names)) != len(names):
        raise CompressorError(
            f"--auto-recipes needs two or more distinct recipes from {', '.join(RECIPES)}; "
            f"got {text!r}"
        )
    return tuple(names)


def recipe_loss(name: str, base: LossConfig) -> LossConfig:
    """The base loss settings (temperature, weights, rectification...) with one recipe's
    method and bias removal."""
    return replace(base, **RECIPES[name])


def pilot_epochs(total_epochs: int, fraction: float = PILOT_FRACTION) -> int:
    """Epochs each pilot trains: ``fraction`` of the schedule, at least 1, fewer than all."""
    if total_epochs <= 1:
        return 1
    return max(1, min(total_epochs - 1, round(total_epochs * fraction)))


@dataclass(frozen=True)
class PilotRow:
    """One recipe's pilot: its best validation top-1 within the pilot epochs, and its cost."""

    recipe: str
    val_top1: float
    epochs: int
    seconds: float
    val_correct: str = ""  # per validation image at the best pilot epoch, "1"/"0" (paired test)


@dataclass
class RecipeChoice:
    """Every pilot and the winner (recorded in distill.json and the report)."""

    pilots: list[PilotRow]
    winner: str
    pilot_epochs: int
    total_epochs: int
    incumbent: str | None = None  # the configured loss's recipe, kept unless clearly beaten
    margin: float = 0.0  # validation top-1 a challenger had to gain (the unpaired fallback)
    test: dict[str, Any] | None = None  # the paired test of the best challenger (Decision)
    pilot_seconds: float = field(init=False)

    def __post_init__(self) -> None:
        self.pilot_seconds = sum(p.seconds for p in self.pilots)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RecipeChoice:
        pilots = [PilotRow(**p) for p in raw["pilots"]]
        return cls(
            pilots, raw["winner"], raw["pilot_epochs"], raw["total_epochs"],
            raw.get("incumbent"), raw.get("margin", 0.0), raw.get("test"),
        )  # fmt: skip


# (loss, checkpoint, stop_after) -> a result with .best_val_top1 (a DistillResult)
Trainer = Callable[[LossConfig, Path, int | None], Any]


def choose_and_train(
    recipes: Sequence[str],
    base: LossConfig,
    total_epochs: int,
    trainer: Trainer,
    state_dir: Path,
    finished: Mapping[str, PilotRow] | None = None,
    on_pilot: Callable[[PilotRow], None] = lambda _row: None,
    *,
    val_images: int | None = None,
) -> tuple[Any, RecipeChoice]:
    """Pilot every recipe, choose on validation (:func:`choose_winner`), train the winner to
    the end of the schedule.

    ``trainer(loss, checkpoint, stop_after)`` must resume from ``checkpoint`` when it exists
    and stop after ``stop_after`` epochs of a ``total_epochs`` schedule (None: the end).
    ``finished`` pilots (read back from a run folder on ``--resume``) are not run again.
    ``val_images``, the size of the validation split, sets the noise margin (None: no margin).
    """
    epochs = pilot_epochs(total_epochs)
    rows: list[PilotRow] = []
    for name in recipes:
        if finished and name in finished:
            rows.append(finished[name])
            continue
        began = time.perf_counter()
        result = trainer(recipe_loss(name, base), pilot_checkpoint(state_dir, name), epochs)
        correct = getattr(result, "best_val_correct", None)
        row = PilotRow(
            name, float(result.best_val_top1), epochs, time.perf_counter() - began,
            encode_correct(correct) if correct is not None else "",
        )  # fmt: skip
        rows.append(row)
        on_pilot(row)
    incumbent = incumbent_recipe(recipes, base)
    winner, margin, test = choose_winner(rows, incumbent, val_images)
    final = trainer(recipe_loss(winner, base), pilot_checkpoint(state_dir, winner), None)
    return final, RecipeChoice(rows, winner, epochs, total_epochs, incumbent, margin, test)


def incumbent_recipe(recipes: Sequence[str], base: LossConfig) -> str:
    """The recipe of the configured loss (``kd`` for the defaults) if piloted, else the first."""
    for name in recipes:
        if recipe_loss(name, base) == base:
            return name
    return recipes[0]


def noise_margin(top1_a: float, top1_b: float, images: int, z: float = 1.96) -> float:
    """How far apart two validation top-1s on ``images`` images can be by chance alone: the
    95% half-width of the difference of two independent proportions."""
    variance = (top1_a * (1 - top1_a) + top1_b * (1 - top1_b)) / images
    return z * math.sqrt(variance)


ALPHA = 0.05  # one-sided significance of the paired test


def encode_correct(correct: Sequence[bool] | Any) -> str:
    """Per-image correctness as a compact "1"/"0" string (kept in pilot.json for resume)."""
    return "".join("1" if bool(c) else "0" for c in list(correct))


def mcnemar(incumbent: str, challenger: str) -> dict[str, Any]:
    """Exact one-sided McNemar test that ``challenger`` is more accurate than ``incumbent``.

    Both are per-image correctness strings over the same validation images. Only discordant
    images count: ``lost`` (incumbent right, challenger wrong) and ``gained`` (the reverse).
    Under "no difference" each discordant image is a fair coin, so the p-value is
    ``P(X >= gained)`` for ``X ~ Binomial(lost + gained, 1/2)``.
    """
    if len(incumbent) != len(challenger):
        raise ValueError("paired test needs results on the same images")
    lost = sum(a == "1" and b == "0" for a, b in zip(incumbent, challenger, strict=True))
    gained = sum(a == "0" and b == "1" for a, b in zip(incumbent, challenger, strict=True))
    n = lost + gained
    p_value = sum(math.comb(n, k) for k in range(gained, n + 1)) / 2**n if n else 1.0
    return {"name": "mcnemar", "lost": lost, "gained": gained, "p_value": p_value}


def choose_winner(
    rows: Sequence[PilotRow], incumbent: str, val_images: int | None
) -> tuple[str, float, dict[str, Any] | None]:
    """``(winner, margin, test)``: the best pilot if it beats the incumbent beyond chance,
    else the incumbent.

    Paired where both pilots recorded per-image results: the best pilot wins when it gained
    more images than it lost and the exact McNemar p-value is below :data:`ALPHA` (``test``
    records the counts and p). Otherwise the unpaired margin: it must beat the incumbent's
    top-1 by more than :func:`noise_margin` (0 without ``val_images``: ties keep the
    incumbent).
    """
    by_name = {row.recipe: row for row in rows}
    best = max(rows, key=lambda r: r.val_top1)  # max keeps the first of equals
    held = by_name[incumbent]
    if best.recipe == incumbent:
        return incumbent, 0.0, None
    paired = best.val_correct and len(best.val_correct) == len(held.val_correct)
    if paired:
        test = {**mcnemar(held.val_correct, best.val_correct), "challenger": best.recipe,
                "alpha": ALPHA}  # fmt: skip
        wins = test["gained"] > test["lost"] and test["p_value"] < ALPHA
        return (best.recipe if wins else incumbent), 0.0, test
    margin = noise_margin(best.val_top1, held.val_top1, val_images) if val_images else 0.0
    return (best.recipe if best.val_top1 - held.val_top1 > margin else incumbent), margin, None
