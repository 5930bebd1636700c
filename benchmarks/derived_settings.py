"""Training settings for one derived step, with the step held fixed (issue #21).

``compressor run`` picks the derived step by measured latency, so two runs may train different
students; comparing learning rates, batch sizes or crops needs the same student every time.
This builds the run's inputs exactly as ``compressor run`` does (``open_context``: profile,
teacher, the teacher's preprocessing, the seeded train/val/test split), prunes the teacher
(``prune_trajectory`` with ``--round-to``), recomputes BatchNorm and measures validation top-1
before training (``prepare_derived``), then distils the named step with compressor's own
training loop (``compressor.train.loop.distill``, best validation epoch kept) and reports test
top-1 of that epoch. One JSON line per step to ``--results``. ``--loss`` overrides loss settings
(``LossConfig`` fields, e.g. ``bias_aware=false`` for plain KD or ``ce_weight=0.1,temperature=2``).

    OMP_NUM_THREADS=1 python benchmarks/derived_settings.py --teacher /tmp/photo224/teacher.pt \\
        --data /tmp/photo224/data --steps 0.52 --round-to 16 --lr 0.01

Choose settings on ``best_val`` (validation), never on ``test``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from compressor.compute.inference import predict_logits, top1  # noqa: E402
from compressor.config.loss import LossConfig  # noqa: E402
from compressor.config.run import RunConfig  # noqa: E402
from compressor.config.train import TrainConfig  # noqa: E402
from compressor.models.pruning import (  # noqa: E402
    DerivedPoint,
    derived_name,
    prepare_derived,
    prune_trajectory,
)
from compressor.pipeline.context import RunContext, open_context  # noqa: E402
from compressor.train.loop import distill  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The options every derived-training benchmark shares (``derived_importance.py`` too)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", type=Path, default=Path("/tmp/photo224/teacher.pt"))
    p.add_argument("--arch", default="mobilenet_v3_small")
    p.add_argument("--data", type=Path, default=Path("/tmp/photo224/data"))
    p.add_argument("--profile", default="mobile-224")
    p.add_argument("--steps", default="0.52", help="MACs ratios of the steps, comma-separated")
    p.add_argument("--round-to", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--crop-min", type=float, default=None, help="default: the profile's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", default="", help="LossConfig overrides: key=value,key=value")
    p.add_argument("--results", type=Path, default=Path("/tmp/derived224/derived_settings.jsonl"))
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def loss_config(spec: str) -> LossConfig:
    """``LossConfig`` with ``key=value`` overrides (numbers, true/false, or words)."""
    overrides: dict[str, object] = {}
    for item in filter(None, spec.split(",")):
        key, value = item.split("=", 1)
        if value.lower() in ("true", "false"):
            overrides[key] = value.lower() == "true"
        else:
            try:
                overrides[key] = float(value)
            except ValueError:
                overrides[key] = value
    return LossConfig(**overrides)  # type: ignore[arg-type]


def train_and_measure(
    args: argparse.Namespace, ctx: RunContext, point: DerivedPoint, label: dict[str, object]
) -> dict[str, object]:
    """Recompute BatchNorm, distil ``point`` with compressor's loop, return (and append) a row."""
    teacher, data = ctx.teacher, ctx.data
    crop = (args.crop_min, 1.0) if args.crop_min else tuple(ctx.profile.train_scale)

    def accuracy(model: torch.nn.Module, split: str) -> float:
        images = getattr(data, split)
        return top1(predict_logits(model, images, teacher.mean, teacher.std), images.labels)

    before = prepare_derived(point, data.train, data.val, teacher.mean, teacher.std, args.seed)
    test_before = accuracy(point.model, "test")
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, crop_scale=crop)  # fmt: skip
    began = time.perf_counter()
    result = distill(teacher.model, point.model.train(), data, teacher.mean, teacher.std,
                     loss_config(args.loss), train)  # fmt: skip
    row = {
        **label, "step": point.name, "params": point.params, "lr": args.lr,
        "batch_size": args.batch_size, "crop": list(crop), "epochs": args.epochs,
        "loss": args.loss, "seed": args.seed, "val_before": before["val_top1_before_training"],
        "test_before": test_before, "best_epoch": result.best_epoch,
        "best_val": result.best_val_top1,
        "val_per_epoch": [round(h["val_top1"], 4) for h in result.history],
        "test": accuracy(result.student, "test"), "teacher_test": accuracy(teacher.model, "test"),
        "teacher_val": accuracy(teacher.model, "val"),
        "teacher_train_error": result.teacher_train_error,
        "seconds": round(time.perf_counter() - began), "torch_threads": torch.get_num_threads(),
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def open_run(args: argparse.Namespace) -> RunContext:
    """The run's inputs exactly as ``compressor run`` loads them (profile, teacher, splits)."""
    torch.manual_seed(args.seed)
    cfg = RunConfig(teacher=args.teacher, data=args.data, profile=args.profile,
                    out=Path("/nonexistent-unused"), arch=args.arch)  # fmt: skip
    return open_context(cfg, lambda _msg: None)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ctx = open_run(args)
    teacher = ctx.teacher
    trajectory = prune_trajectory(
        teacher.model, args.arch, teacher.num_classes, ctx.profile.input_shape,
        round_to=args.round_to,
    )  # fmt: skip

    for ratio in args.steps.split(","):
        point = copy.deepcopy(trajectory.point(derived_name(args.arch, float(ratio))))
        train_and_measure(args, ctx, point, {"round_to": args.round_to})


if __name__ == "__main__":
    main()
