"""The run's configuration (:class:`RunConfig`), as the CLI builds it and run.json keeps it.

Torch-free and imported by the CLI before any command runs: the CLI's defaults are read from
here (``RUN_DEFAULTS``), so ``--help`` stays fast. Loading the inputs it names is
:mod:`compressor.pipeline.context`'s job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from compressor.config.loss import LossConfig
from compressor.config.train import TrainConfig


@dataclass(frozen=True)
class RunConfig:
    """Everything ``compressor run`` needs; the CLI's defaults are read from here."""

    teacher: Path
    data: Path
    profile: str
    out: Path
    arch: str | None = None
    family: str | None = None
    candidates: tuple[str, ...] | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    val_fraction: float = 0.1
    trust_checkpoint: bool = False
    overwrite: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resume: bool = False
    data_cache: bool = True  # keep decoded images on disk between runs (data_cache module)
    resize_mode: str | None = None  # the teacher's eval transform, as stated on the CLI
    resize_size: int | None = None
    interpolation: str | None = None
    student_init: Path | None = None  # pretrained student weights: a file, or a folder of <arch>.pt
    auto_recipes: tuple[str, ...] | None = None  # --method auto: recipes to pilot (recipes.py)
    data_storage: str = "auto"  # decoded images in memory, streamed from disk, or chosen by size
    student_source: str = "auto"  # auto | pruned (derived from the teacher) | fresh (the ladder)
    # peak learning rate for a derived (warm-started) student: best mean validation top-1 of
    # 0.005 / 0.01 / 0.02 on the photo224 step that ships (docs/pruning.md)
    pruned_lr: float = 0.005
    selection_memory: bool = True  # keep an earlier run's choice on this host while it holds


RUN_DEFAULTS = {f.name: f.default for f in fields(RunConfig)}
_PATHS = ("teacher", "data", "out", "student_init")
_TUPLES = ("candidates", "auto_recipes", "mean", "std")


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    """The configuration as run.json records it (paths as strings)."""
    out = asdict(cfg)
    for key in _PATHS:
        out[key] = str(out[key]) if out[key] is not None else None
    return out


def config_from_dict(raw: dict[str, Any], out: Path) -> RunConfig:
    """A configuration from run.json's dict, for a run resumed in ``out``.

    Raises:
        KeyError, TypeError, ValueError: a field is missing or invalid (a damaged run.json).
    """
    values = {
        **raw,
        "teacher": Path(raw["teacher"]),
        "data": Path(raw["data"]),
        "student_init": Path(raw["student_init"]) if raw.get("student_init") else None,
        **{key: tuple(raw[key]) if raw.get(key) else None for key in _TUPLES},
        "out": out,
        "loss": LossConfig(**raw["loss"]),
        "train": TrainConfig(**raw["train"]),
        "overwrite": False,
        "resume": True,
    }
    return RunConfig(**values)
