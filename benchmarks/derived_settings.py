"""Training settings for one derived step, with the step held fixed (issue #21).

``compressor run`` picks the derived step by measured latency, so two runs may train different
students; comparing learning rates, batch sizes or crops needs the same student every time.
This builds the run's inputs exactly as ``compressor run`` does (``open_context``: profile,
teacher, the teacher's preprocessing, the seeded train/val/test split), prunes the teacher
(``prune_trajectory`` with ``--round-to``), recomputes BatchNorm and measures validation top-1
before training (``prepare_derived``), then distils the named step with compressor's own
training loop (``compressor.train.loop.distill``, best validation epoch kept) and reports test
top-1 of that epoch. One JSON line per step to ``--results``.

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
from compressor.models.pruning import derived_name, prepare_derived, prune_trajectory  # noqa: E402
from compressor.pipeline.context import open_context  # noqa: E402
from compressor.train.loop import distill  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    p.add_argument("--results", type=Path, default=Path("/tmp/derived224/derived_settings.jsonl"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    cfg = RunConfig(teacher=args.teacher, data=args.data, profile=args.profile,
                    out=Path("/nonexistent-unused"), arch=args.arch)  # fmt: skip
    ctx = open_context(cfg, lambda _msg: None)
    teacher, data = ctx.teacher, ctx.data
    crop = (args.crop_min, 1.0) if args.crop_min else tuple(ctx.profile.train_scale)
    trajectory = prune_trajectory(
        teacher.model, args.arch, teacher.num_classes, ctx.profile.input_shape,
        round_to=args.round_to,
    )  # fmt: skip

    def accuracy(model: torch.nn.Module, split: str) -> float:
        images = getattr(data, split)
        return top1(predict_logits(model, images, teacher.mean, teacher.std), images.labels)

    teacher_test, teacher_val = accuracy(teacher.model, "test"), accuracy(teacher.model, "val")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for ratio in args.steps.split(","):
        point = copy.deepcopy(trajectory.point(derived_name(args.arch, float(ratio))))
        before = prepare_derived(point, data.train, data.val, teacher.mean, teacher.std, args.seed)
        test_before = accuracy(point.model, "test")
        train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed, crop_scale=crop)  # fmt: skip
        began = time.perf_counter()
        result = distill(teacher.model, point.model.train(), data, teacher.mean, teacher.std,
                         LossConfig(), train)  # fmt: skip
        row = {
            "step": point.name, "round_to": args.round_to, "lr": args.lr,
            "batch_size": args.batch_size, "crop": list(crop), "epochs": args.epochs,
            "seed": args.seed, "val_before": before["val_top1_before_training"],
            "test_before": test_before, "best_epoch": result.best_epoch,
            "best_val": result.best_val_top1,
            "val_per_epoch": [round(h["val_top1"], 4) for h in result.history],
            "test": accuracy(result.student, "test"), "teacher_test": teacher_test,
            "teacher_val": teacher_val, "seconds": round(time.perf_counter() - began),
            "torch_threads": torch.get_num_threads(),
        }  # fmt: skip
        print(json.dumps(row), flush=True)
        with args.results.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
