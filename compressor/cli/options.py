"""Typer option types shared by the commands, so each command's signature is one line per option.

Defaults are not written here: commands read them from the config dataclasses
(``TrainConfig``, ``LossConfig``, ``RunConfig``), the one source of every default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from compressor.config.loss import RECTIFICATIONS, SCHEDULES, WEIGHTINGS
from compressor.config.train import DEVICE_CHOICES, PRECISIONS


def one_of(choices: tuple[str, ...]) -> str:
    """``("a", "b", "c")`` -> ``"a, b or c"``: help text from the tuple the config checks."""
    return f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]


def keep_recorded(option: Any) -> Any:
    """The same option with ``None`` as its value when not given: ``compressor distill`` then
    keeps what the run folder recorded."""
    base, *metadata = get_args(option)
    return Annotated[base | None, *metadata]


DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only print the summary.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print report.json on stdout.")]
TrustOpt = Annotated[bool, typer.Option(help="Allow unpickling arbitrary objects (runs code!).")]
ProfileOpt = Annotated[str, typer.Option(help="Bundled profile name or path to a .toml file.")]
ArchOpt = Annotated[
    str | None, typer.Option(help="Architecture of a plain state dict, e.g. resnet18.")
]
SeedOpt = Annotated[int, typer.Option(help="Seed for splits, init and augmentation.")]

# --- inputs and the run folder -----------------------------------------------------------------
OutFolderOpt = Annotated[Path, typer.Option(help="Run folder to write.")]
TeacherOpt = Annotated[Path | None, typer.Option(help="Teacher checkpoint (bundle or state dict).")]
DataOpt = Annotated[
    Path | None,
    typer.Option(help="ImageFolder root: train/ + test/ (or val/), or class folders."),
]
RunProfileOpt = Annotated[
    str | None, typer.Option(help="Bundled profile name or path to a .toml file.")
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        help="Continue the run in --out after an interruption: finished stages are kept, "
        "training continues from the last completed epoch; every other option is read "
        "from --out/run.json."
    ),
]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing run folder.")]
FamilyOpt = Annotated[
    str | None, typer.Option(help="Student family (default: chosen from the input size).")
]
CandidatesOpt = Annotated[
    str | None, typer.Option(help="Comma-separated subset of the family's ladder to consider.")
]
StudentInitOpt = Annotated[
    Path | None,
    typer.Option(
        help="Pretrained student weights (state dict or bundle of the chosen arch), or a "
        "folder of <arch>.pt files for the ladder, or 'torchvision' for torchvision's published "
        "ImageNet weights (through its cache, TORCH_HOME); the classifier is re-initialised "
        "when the class count differs. Fresh (ladder) students only."
    ),
]
StudentSourceOpt = Annotated[
    str,
    typer.Option(
        help="auto: a width-pruned copy of the teacher when it can be pruned and one fits, else "
        "the fresh ladder; pruned: only derived students (an error when none can be made or "
        "fits); fresh: only the ladder."
    ),
]
PrunedLrOpt = Annotated[
    float,
    typer.Option(
        min=1e-6,
        help="Peak learning rate for a derived (pruned) student, which starts from the "
        "teacher's weights (--lr is for fresh students).",
    ),
]  # fmt: skip

# --- training ----------------------------------------------------------------------------------
EpochsOpt = Annotated[int, typer.Option(min=1, help="Training epochs.")]
BatchSizeOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Training batch size per process (per GPU under torchrun, where the peak "
        "learning rate is scaled by the number of processes; see docs/throughput.md).",
    ),
]
LrOpt = Annotated[float, typer.Option(min=0.0, help="Peak learning rate (SGD, cosine).")]
AugmentOpt = Annotated[
    bool,
    typer.Option(
        "--augment/--no-augment",
        help="Random crop and flip; without it the teacher's logits are computed once.",
    ),
]
HflipOpt = Annotated[bool, typer.Option("--hflip/--no-hflip", help="Random horizontal flips.")]
DeviceOpt = Annotated[str, typer.Option(help=f"{one_of(DEVICE_CHOICES)}.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        help=f"Training precision: {one_of(PRECISIONS)}; auto is bf16 on CUDA, fp16 + loss "
        "scaling on GPUs without bf16, fp32 on CPU."
    ),
]
CompileOpt = Annotated[
    bool | None,
    typer.Option(
        "--compile/--no-compile",
        help="torch.compile the training step and the teacher. Default (neither flag): on CUDA "
        "with CUDA graphs (mode reduce-overhead) when every batch is full, else eager; on CPU "
        "eager (compiling takes a minute there).",
        show_default=False,
    ),
]
DeterministicOpt = Annotated[
    bool,
    typer.Option(
        "--deterministic/--nondeterministic",
        help="Deterministic cuDNN/cuBLAS algorithms (same seed, same GPU: same numbers; "
        "slower). Restored when training ends.",
    ),
]
ValFractionOpt = Annotated[
    float, typer.Option(min=0.01, max=0.5, help="Validation split carved from train.")
]

# --- the loss ----------------------------------------------------------------------------------
BiasAwareOpt = Annotated[
    bool,
    typer.Option(
        "--bias-aware/--no-bias-aware",
        help="Teacher-bias removal (AAAI 2025); on by default with --rectification drop "
        "(elimination), the setting docs/benchmarks.md found never worse than plain KD; "
        "--no-bias-aware is plain KD.",
    ),
]
CeWeightOpt = Annotated[
    float, typer.Option(help="lambda: weight of cross-entropy vs distillation.")
]
TemperatureOpt = Annotated[float, typer.Option(help="Distillation temperature T.")]
AlphaOpt = Annotated[float, typer.Option(help="DKD target-class weight.")]
BetaOpt = Annotated[float, typer.Option(help="DKD non-target-class weight.")]
WarmupOpt = Annotated[
    int | None, typer.Option(help="DKD warm-up epochs [default: min(20, max(1, epochs // 4))].")
]
ScheduleOpt = Annotated[str, typer.Option(help=f"Bias weight b(e): {one_of(SCHEDULES)}.")]
BiasWeightingOpt = Annotated[
    str,
    typer.Option(
        help=f"How bias-aware KD weighs right and rectified samples ({one_of(WEIGHTINGS)}): "
        "subset, the paper's per-subset means, weights b and 1-b; sample, each sample weighted "
        "b or 1-b over the batch size, so rectified samples keep their share."
    ),
]
RectificationOpt = Annotated[
    str,
    typer.Option(
        help=f"Wrong-sample rectification: {one_of(RECTIFICATIONS)} (drop: elimination only)."
    ),
]

# --- data and preprocessing --------------------------------------------------------------------
MeanOpt = Annotated[
    str | None, typer.Option(help="Normalisation mean for a state dict, e.g. 0.49,0.48,0.45.")
]
StdOpt = Annotated[str | None, typer.Option(help="Normalisation std for a state dict.")]
ResizeModeOpt = Annotated[
    str | None,
    typer.Option(
        help="How the teacher's eval transform resizes: center-crop (shorter side to "
        "--resize-size, then the centre), squash or letterbox. Default: what the teacher bundle "
        "or the profile says, else center-crop for inputs >= 64 px and squash below.",
    ),
]
ResizeSizeOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Shorter side before the centre crop (default: input / 0.875)."),
]
InterpolationOpt = Annotated[
    str | None, typer.Option(help="Resampling of the eval transform: bilinear, bicubic, nearest.")
]
DataCacheOpt = Annotated[
    bool,
    typer.Option(
        "--data-cache/--no-data-cache",
        help="Keep decoded images on disk between runs ($COMPRESSOR_CACHE_DIR, default "
        "~/.cache/compressor); rebuilt when any image changes.",
    ),
]
SelectionMemoryOpt = Annotated[
    bool,
    typer.Option(
        "--selection-memory/--no-selection-memory",
        help="Re-time the student an earlier run chose for the same teacher, profile and host "
        "($COMPRESSOR_CACHE_DIR/selections.json) and keep it while it still fits the budget and "
        "is not clearly below min_speedup, so repeated runs ship the same student; off: search "
        "afresh.",
    ),
]
DataStorageOpt = Annotated[
    bool | None,
    typer.Option(
        "--data-in-memory/--data-stream",
        help="Decode every image into memory once (fast; unreadable files are skipped), or "
        "stream batches from disk with worker processes. Default: in memory when the decoded "
        "images fit a quarter of the available RAM, streamed otherwise.",
        show_default=False,
    ),
]
