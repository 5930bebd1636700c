"""Students derived from the teacher: width-pruned copies along a pruning trajectory.

A fresh network trained for a few epochs starts far below a trained teacher; a copy of the
teacher with fewer channels keeps most of what it learned (Torch-Pruning, Fang et al., CVPR 2023;
the Minitron recipe). Structural pruning must follow residual, depthwise, concatenation and
squeeze-excitation dependencies, so it is done by Torch-Pruning's dependency graph (tested with
1.6.x), never by hand. Squeeze-excitation blocks are removed first, their mean gates folded into
the next convolution (:mod:`compressor.models.squeeze_excitation`): at batch 1 they cost far
more time than MACs, and with them gone a mobilenet_v3_small reached 1.5x its teacher's speed
keeping 0.79x of its MACs instead of 0.55x (docs/pruning.md). That SE-free, unpruned copy is
the trajectory's first step. The teacher is pruned iteratively in :data:`STEPS` equal steps of the
channel ratio (magnitude importance, the classifier kept whole, kept widths rounded *up* to a
multiple the caller names: onnxruntime's channel block on the timing host, else
:data:`ROUND_TO`, so a narrow layer keeps its width until the ratio reaches a whole block);
every
step is a candidate, and selection times them to find the largest that fits the budget
(:mod:`compressor.selection.trajectory_search`).
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compressor.errors import CompressorError
from compressor.models.checkpoint import ModelBundle
from compressor.models.registry import count_flops, count_params, known_arch
from compressor.models.squeeze_excitation import remove_squeeze_excitation
from compressor.models.widths import layer_widths

STEPS = 16
MAX_CHANNEL_RATIO = 0.9  # the most pruned step keeps 10% of each layer's channels (>= ROUND_TO)
ROUND_TO = 8  # the width multiple when the caller names none (AVX2's NCHWc block)
NAME_MARK = "-pruned-"


@dataclass
class DerivedPoint:
    """One step of the trajectory: the teacher with ``channel_ratio`` of its channels removed."""

    base_arch: str
    step: int
    channel_ratio: float
    model: nn.Module
    params: int
    mflops: float
    macs_ratio: float  # MACs relative to the teacher (same input)
    round_to: int = ROUND_TO  # every width pruning changed is a multiple of this
    removed: tuple[str, ...] = ()  # squeeze-excitation blocks removed (folded) before pruning

    @property
    def name(self) -> str:
        return derived_name(self.base_arch, self.macs_ratio)

    @property
    def description(self) -> str:
        return describe(self.base_arch, self.macs_ratio, bool(self.removed), self.step > 0)

    def record(self) -> dict[str, Any]:
        """What ``student.pt`` stores to rebuild it: the base, per-layer widths, the ratios."""
        return {
            "base_arch": self.base_arch,
            "method": (
                ("squeeze-excitation folded (mean gate), then " if self.removed else "")
                + f"torch-pruning magnitude (L2), {STEPS} steps, round_to={self.round_to}"
            ),
            "round_to": self.round_to,
            "removed_squeeze_excitation": list(self.removed),
            "step": self.step,
            "channel_ratio": round(self.channel_ratio, 4),
            "macs_ratio": round(self.macs_ratio, 4),
            "description": self.description,
            "widths": layer_widths(self.model),
        }


@dataclass
class Trajectory:
    """The teacher and its pruned copies, least pruned first."""

    base_arch: str
    teacher_mflops: float
    points: list[DerivedPoint] = field(default_factory=list)
    seconds: float = 0.0

    def point(self, name: str) -> DerivedPoint:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)


def derived_name(base_arch: str, macs_ratio: float) -> str:
    return f"{base_arch}{NAME_MARK}{macs_ratio:.2f}x"


def is_derived(name: str) -> bool:
    """Whether a candidate name is a pruned copy of the teacher (not a ladder architecture)."""
    return NAME_MARK in name


def describe(
    base_arch: str, macs_ratio: float, without_se: bool = False, width_pruned: bool = True
) -> str:
    base = f"{base_arch} without squeeze-excitation" if without_se else base_arch
    if not width_pruned:
        return f"{base} ({macs_ratio:.2f}x MACs)"
    return f"{base}{',' if without_se else ''} width-pruned to {macs_ratio:.2f}x MACs"


def unprunable_reason(teacher: ModelBundle) -> str | None:
    """Why the teacher cannot yield a derived student that reloads safely (None: it can).

    A derived student is saved as its base architecture plus per-layer widths, so the teacher
    must be an architecture compressor can build by name: a TorchScript or torch.export archive,
    or a pickled module, has none.
    """
    if teacher.format in ("torchscript", "torch-export"):
        return f"the teacher is a {teacher.format} archive (no architecture to rebuild by name)"
    if teacher.format == "pickled-module":
        return "the teacher is a pickled module (no registered architecture to rebuild by name)"
    if not known_arch(teacher.arch):
        return f"the teacher's architecture '{teacher.arch}' is not one compressor can build"
    return None


def _classifier(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The output layer (last Linear or conv with ``num_classes`` outputs): never pruned."""
    outputs: list[nn.Module] = [
        m
        for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == num_classes)
        or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)
    ]
    return outputs[-1:]


def prune_trajectory(
    teacher: nn.Module,
    base_arch: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    steps: int = STEPS,
    max_channel_ratio: float = MAX_CHANNEL_RATIO,
    round_to: int = ROUND_TO,
    remove_se: bool = True,
) -> Trajectory:
    """Prune a copy of ``teacher`` step by step; return every distinct step as a candidate.

    With ``remove_se`` the copy loses its foldable squeeze-excitation blocks first, and that
    copy, unpruned, is step 0. The teacher itself is not modified. Weights are the teacher's
    (magnitude-selected channels); BatchNorm statistics are recomputed later, for the chosen
    step only. ``round_to`` should be the timing host's channel block
    (:func:`compressor.latency.cpu.channel_block`): widths off the block remove MACs but not
    time.

    Raises:
        CompressorError: Torch-Pruning cannot trace the model or a pruned copy no longer runs.
    """
    try:
        import torch_pruning as tp
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise CompressorError(
            "derived students need torch-pruning (pip install torch-pruning)"
        ) from exc
    began = time.perf_counter()
    model = copy.deepcopy(teacher).cpu().float().eval()
    example = torch.zeros(1, *input_shape)
    teacher_mflops = count_flops(model, input_shape) / 1e6
    trajectory = Trajectory(base_arch, round(teacher_mflops, 3))

    def keep(step: int, channel_ratio: float, removed: tuple[str, ...]) -> None:
        """Add the model as it is now, if it is below the teacher's FLOPs."""
        mflops = count_flops(model, input_shape) / 1e6
        if mflops < teacher_mflops:
            trajectory.points.append(
                DerivedPoint(base_arch, step, channel_ratio, copy.deepcopy(model),
                             count_params(model), round(mflops, 3), mflops / teacher_mflops,
                             round_to, removed)
            )  # fmt: skip

    try:
        removed = tuple(remove_squeeze_excitation(model)) if remove_se else ()
        if removed:
            keep(0, 0.0, removed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = _round_up_pruner(tp)(
                model,
                example,
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                pruning_ratio=max_channel_ratio,
                iterative_steps=steps,
                ignored_layers=_classifier(model, num_classes),
                round_to=round_to,
            )
            for step in range(1, steps + 1):
                pruner.step()
                with torch.no_grad():
                    model(example)
                keep(step, max_channel_ratio * step / steps, removed)
    except CompressorError:
        raise
    except Exception as exc:  # tracing fails in many ways; each means "cannot prune this model"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompressorError(f"Torch-Pruning cannot prune {base_arch}: {first}") from exc
    names = [p.name for p in trajectory.points]  # equal names: equal MACs (to 2 digits)
    trajectory.points = [p for i, p in enumerate(trajectory.points) if p.name not in names[:i]]
    trajectory.seconds = time.perf_counter() - began
    return trajectory


def _round_up_pruner(tp: Any) -> type:
    """Torch-Pruning's ``BasePruner`` with kept widths rounded up to ``round_to``, not down.

    Rounding down cuts a narrow layer by a whole block at the first step (a 48-channel
    residual stream to 32, a third of it, when the step asked for 6%), which costs accuracy
    and little time: on the photo224 teacher the first pruned step rounded down was 0.77x MACs,
    1.7x faster and 52.7% before training; rounded up, 0.83x MACs, 1.85x faster and 58.8%
    (docs/pruning.md). A layer is cut only once the ratio reaches a whole block, so widths
    are the teacher's own or multiples of ``round_to``. Overrides the private ``_round_to``
    (torch-pruning 1.6.x, pinned; tests/models/test_derived.py checks the widths it gives).
    """

    class RoundUpPruner(tp.pruner.BasePruner):  # type: ignore[misc, name-defined]
        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            kept = current_channels - n_pruned
            kept = min(current_channels, -(-kept // round_to) * round_to)
            return max(current_channels - kept, 0)

    return RoundUpPruner


STUDENT_SOURCES = ("auto", "pruned", "fresh")


@dataclass(frozen=True)
class SourcePlan:
    """Which kinds of student selection considers, decided before any timing.

    ``trajectory`` is the teacher's pruning trajectory (None: no derived candidates) and
    ``reason`` the one line that says why (logged and reported).
    """

    source: str  # the --student-source asked for
    trajectory: Trajectory | None = None
    reason: str = ""

    @property
    def fresh_allowed(self) -> bool:
        return self.source != "pruned"


def plan_student_source(
    source: str,
    teacher: ModelBundle,
    input_shape: tuple[int, int, int],
    *,
    student_init: object | None = None,
    ladder_named: bool = False,
    round_to: int = ROUND_TO,
) -> SourcePlan:
    """Decide which kinds of student selection considers (``--student-source``).

    ``auto`` derives students from the teacher when it can be pruned, and falls back to the
    fresh ladder otherwise; ``pruned`` insists (an error when it cannot); ``fresh`` never
    prunes; pruned widths are multiples of ``round_to``. ``--student-init`` and an explicit
    ``--family``/``--candidates`` (``ladder_named``) ask for ladder students, so ``auto`` then
    keeps to them.

    Raises:
        CompressorError: an unknown source, ``pruned`` with ``--student-init``, or ``pruned``
            for a teacher that cannot be pruned (the reason named).
    """
    if source not in STUDENT_SOURCES:
        raise CompressorError(
            f"--student-source must be one of {', '.join(STUDENT_SOURCES)}, got '{source}'"
        )
    if source == "fresh":
        return SourcePlan("fresh", None, "--student-source fresh")
    if student_init is not None or ladder_named:
        given = "--student-init" if student_init is not None else "--family/--candidates"
        if source == "pruned":
            raise CompressorError(
                f"--student-source pruned conflicts with {given}: a derived student starts from "
                "the teacher's own weights and architecture"
            )
        return SourcePlan("auto", None, f"auto: {given} given, so ladder students only")
    reason = unprunable_reason(teacher)
    trajectory = None
    if reason is None:
        try:
            trajectory = prune_trajectory(
                teacher.model, teacher.arch, teacher.num_classes, input_shape, round_to=round_to
            )
        except CompressorError as exc:
            reason = str(exc)
    if trajectory is not None and not trajectory.points:
        trajectory, reason = None, f"pruning {teacher.arch} removed no channels"
    if trajectory is None:
        if source == "pruned":
            raise CompressorError(f"--student-source pruned: cannot derive a student: {reason}")
        return SourcePlan("auto", None, f"auto: the fresh ladder, because {reason}")
    took = f"{trajectory.seconds:.1f} s to prune, widths in multiples of {round_to}"
    return SourcePlan(source, trajectory, f"{source}: {teacher.arch} can be pruned ({took})")


@torch.no_grad()
def prepare_derived(
    point: DerivedPoint,
    train_images: Any,
    val: Any,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    seed: int,
    images: int = 512,
) -> dict[str, Any]:
    """Recompute the pruned copy's BatchNorm statistics, then measure it on validation.

    Removing channels changes every later layer's input distribution, so the teacher's running
    statistics no longer describe it; recomputing them on ``images`` un-augmented training
    images (precise BN, :mod:`compressor.compute.batchnorm`) recovers much of the accuracy before
    any
    training. Returns the record kept in selection.json and the report.
    """
    from compressor.compute.batchnorm import recalibrate_batchnorm
    from compressor.compute.inference import predict_logits, top1
    from compressor.data.splits import normalize

    count = min(images, len(train_images))
    pick = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))
    pick = pick[:count].sort().values
    batches = (
        normalize(train_images.read(pick[i : i + 64]), mean, std) for i in range(0, count, 64)
    )
    used = recalibrate_batchnorm(point.model, batches)
    point.model.eval()
    val_top1 = top1(predict_logits(point.model, val, mean, std), val.labels) if len(val) else None
    return {
        "description": point.description,
        "base_arch": point.base_arch,
        "macs_ratio": round(point.macs_ratio, 4),
        "channel_ratio": round(point.channel_ratio, 4),
        "params": point.params,
        "bn_recalibration_images": used,
        "val_top1_before_training": val_top1,
    }
