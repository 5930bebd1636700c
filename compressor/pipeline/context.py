"""What every stage of a run reads: the validated inputs and the earlier stages' results (the
stage contract is :mod:`compressor.pipeline.stage`, the stages :mod:`compressor.pipeline.stages`,
the run's configuration :mod:`compressor.config.run`).

``open_context`` validates every input (profile, teacher, preprocessing, data and their
compatibility) before any stage runs, so bad input stops a run before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compressor.compute import distributed
from compressor.config.run import RunConfig, config_from_dict
from compressor.data.preprocess import Preprocess, resolve_preprocess
from compressor.data.splits import DatasetSplits, load_image_folder
from compressor.files import default_cache_dir
from compressor.latency.cpu import cpu_allowance, thread_warning
from compressor.latency.profiles import LatencyProfile, load_profile
from compressor.losses.methods import get_method
from compressor.models.checkpoint import ModelBundle, load_bundle
from compressor.pipeline.input_checks import check_channels, check_classes
from compressor.pipeline.results import StageResults
from compressor.run_folder import RunFolder

Log = Callable[[str], None]


@dataclass
class RunContext:
    """The validated inputs of a run, and each finished stage's typed result."""

    cfg: RunConfig
    folder: RunFolder
    profile: LatencyProfile
    teacher: ModelBundle
    preprocess: Preprocess
    data: DatasetSplits
    warnings: list[str]
    log: Log
    results: StageResults = field(default_factory=StageResults)
    reused: list[str] = field(default_factory=list)  # stages a --resume did not redo


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


def load_run_config(out: Path) -> RunConfig:
    """The configuration a run folder was started with (for ``--resume``), its loss method
    checked against the registry (a hand-edited or older run.json fails here, in one line)."""
    folder = RunFolder(out)
    raw = folder.read_config()
    try:
        cfg = config_from_dict(raw, out)
        get_method(cfg.loss.method)
    except (KeyError, TypeError, ValueError) as exc:
        raise folder.damaged(exc) from exc
    return cfg
