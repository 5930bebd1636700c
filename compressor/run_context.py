"""What every stage of a run reads (the configuration, the validated inputs, earlier results)
and the stage contract itself (:class:`Stage`; the stages are in :mod:`compressor.stages`).

``open_context`` validates every input (profile, teacher, preprocessing, data and their
compatibility) before any stage runs, so bad input stops a run before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from compressor import distributed
from compressor.checkpoint import ModelBundle, load_bundle
from compressor.compat import check_channels, check_classes
from compressor.cpu_check import cpu_allowance, thread_warning
from compressor.data import DatasetSplits, load_image_folder
from compressor.data_cache import default_cache_dir
from compressor.loss_config import LossConfig
from compressor.preprocess import Preprocess, resolve_preprocess
from compressor.profile import LatencyProfile, load_profile
from compressor.run_folder import RunFolder
from compressor.train_config import TrainConfig

Log = Callable[[str], None]


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
    pruned_lr: float = 0.01  # peak learning rate for a derived (warm-started) student


RUN_DEFAULTS = {f.name: f.default for f in fields(RunConfig)}
_PATHS = ("teacher", "data", "out", "student_init")
_TUPLES = ("candidates", "auto_recipes", "mean", "std")


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    """The configuration as run.json records it (paths as strings)."""
    out = asdict(cfg)
    for key in _PATHS:
        out[key] = str(out[key]) if out[key] is not None else None
    return out


def load_run_config(out: Path) -> RunConfig:
    """The configuration a run folder was started with (for ``--resume``)."""
    folder = RunFolder(out)
    raw = folder.read_config()
    try:
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
    except (KeyError, TypeError, ValueError) as exc:
        raise folder.damaged(exc) from exc


@dataclass
class RunContext:
    """The validated inputs of a run, and each finished stage's result by stage name."""

    cfg: RunConfig
    folder: RunFolder
    profile: LatencyProfile
    teacher: ModelBundle
    preprocess: Preprocess
    data: DatasetSplits
    warnings: list[str]
    log: Log
    results: dict[str, Any] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)  # stages a --resume did not redo


class Stage:
    """One step of a run. Subclasses set the class attributes and implement ``run``."""

    name = ""
    every_rank = False  # True: every torchrun rank runs it; else rank 0, the others get its result
    resumable = True  # False: produced afresh on --resume (verification, timing, the report)

    def artifacts(self, folder: RunFolder) -> list[Path]:
        """Every file the stage writes (removed when an upstream stage is re-run)."""
        return []

    def records(self, folder: RunFolder) -> list[Path]:
        """The files whose presence means the stage finished (``--resume`` reuses it)."""
        return self.artifacts(folder)

    def run(self, ctx: RunContext) -> Any:
        raise NotImplementedError

    def load(self, ctx: RunContext) -> Any:
        """The result of an earlier run of the stage, read back from the run folder."""
        raise NotImplementedError(f"stage {self.name} cannot be reused")


def open_context(cfg: RunConfig, log: Log) -> RunContext:
    """Load and check every input; raises CompressorError naming the first problem."""
    profile = load_profile(cfg.profile)
    teacher = load_teacher(cfg, profile)
    log(f"teacher: {teacher.arch} ({teacher.format}), {teacher.num_classes} classes")
    preprocess = resolve_run_preprocess(cfg, profile, teacher)
    log(f"preprocessing: {preprocess.describe()}")
    data = load_data(cfg, profile, preprocess, log)
    log(
        f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images, "
        f"{len(data.class_names)} classes (test = {data.test_source})"
    )
    warnings = check_compatibility(teacher, profile, data)
    for warning in warnings:
        log(f"warning: {warning}")
    return RunContext(cfg, RunFolder(cfg.out), profile, teacher, preprocess, data, warnings, log)


def check_compatibility(
    teacher: ModelBundle, profile: LatencyProfile, data: DatasetSplits
) -> list[str]:
    """Errors for teacher/profile/data combinations that cannot work; warnings for odd ones."""
    check_channels("teacher", teacher.in_channels, profile)
    names = teacher.class_names
    check_classes("teacher", teacher.num_classes, names, data.class_names, str(data.root))
    warnings = []
    if teacher.input_size and tuple(teacher.input_size) != tuple(profile.input_shape[1:]):
        warnings.append(
            f"teacher was saved for input {list(teacher.input_size)} but the profile feeds "
            f"{list(profile.input_shape[1:])}"
        )
    if data.skipped:
        warnings.append(f"{len(data.skipped)} unreadable file(s) skipped, e.g. {data.skipped[0]}")
    threads = thread_warning(profile.intra_op_threads, cpu_allowance())
    if threads:
        warnings.append(threads)
    return warnings


def load_teacher(cfg: RunConfig, profile: LatencyProfile) -> ModelBundle:
    """The teacher; a state dict's normalisation comes from the CLI, else the profile."""
    return load_bundle(
        cfg.teacher,
        arch=cfg.arch,
        trust_checkpoint=cfg.trust_checkpoint,
        mean=cfg.mean or profile.mean,
        std=cfg.std or profile.std,
    )


def resolve_run_preprocess(
    cfg: RunConfig, profile: LatencyProfile, teacher: ModelBundle
) -> Preprocess:
    """The teacher's eval transform: CLI flags, then the bundle's record, then the profile."""
    check_channels("teacher", teacher.in_channels, profile)
    channels, height, width = profile.input_shape
    stated = {
        "resize_mode": cfg.resize_mode,
        "resize_size": cfg.resize_size,
        "interpolation": cfg.interpolation,
    }
    return resolve_preprocess(
        (height, width),
        channels,
        teacher.mean,
        teacher.std,
        stated,
        teacher.preprocess,
        profile.preprocess_layer(),
    )


def load_data(
    cfg: RunConfig, profile: LatencyProfile, preprocess: Preprocess, log: Log
) -> DatasetSplits:
    return load_image_folder(
        cfg.data,
        profile.input_shape,
        seed=cfg.train.seed,
        val_fraction=cfg.val_fraction,
        cache_dir=default_cache_dir() if cfg.data_cache else None,
        log=log,
        preprocess=preprocess,
        storage=cfg.data_storage,
        processes_per_host=distributed.processes_per_host(),
    )
