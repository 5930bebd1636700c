"""Which channels to prune: importance criteria and layer allocation at equal MACs (issue #21).

compressor prunes with Torch-Pruning's group L2 magnitude, the same ratio in every layer. This
checks whether a data-driven criterion (first-order Taylor, ``GroupTaylorImportance``, with
gradients of cross-entropy on 256 training images before every step) or a non-uniform allocation
(``global_pruning``; ``isomorphic`` ranks channels globally within structurally alike groups)
keeps more of the teacher at the same MACs. Each variant prunes the teacher in fine steps
(1/64 of 90% of the channels) until its MACs fall to ``--macs``, then goes through
``derived_settings.train_and_measure``: precise BatchNorm, validation top-1 before training,
distillation with compressor's own loop, test top-1 of the best validation epoch.

    OMP_NUM_THREADS=1 python benchmarks/derived_importance.py --variants magnitude,taylor \\
        --macs 0.56 --round-to 16

``--before-only`` stops after the validation top-1 before training (seconds per variant).
Equal MACs is not equal latency: time a non-uniform winner before trusting it
(``benchmarks/channel_block.py`` measures the uniform steps). The teacher is pruned as it is,
squeeze-excitation kept, as compressor did before it removed those blocks (docs/pruning.md).
"""

from __future__ import annotations

import copy
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import derived_settings  # noqa: E402

from compressor.data.splits import normalize  # noqa: E402
from compressor.models.pruning import DerivedPoint, _classifier, prepare_derived  # noqa: E402
from compressor.models.registry import count_flops, count_params  # noqa: E402
from compressor.pipeline.context import RunContext  # noqa: E402

FINE_STEPS = 64
VARIANTS = ("magnitude", "taylor", "global", "isomorphic", "taylor-isomorphic")


def gradient_batches(ctx: RunContext, seed: int, batches: int = 4) -> Iterator[tuple]:
    """``batches`` x 64 un-augmented training images and labels, the same ones every step."""
    data, teacher = ctx.data, ctx.teacher
    pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    for i in range(batches):
        index = pick[i * 64 : (i + 1) * 64].sort().values
        yield normalize(data.train.read(index), teacher.mean, teacher.std), data.train.labels[index]


def prune_to(ctx: RunContext, variant: str, macs: float, round_to: int, seed: int) -> DerivedPoint:
    """The teacher pruned with ``variant`` in fine steps until its MACs ratio is <= ``macs``."""
    import torch_pruning as tp

    teacher = ctx.teacher
    shape = ctx.profile.input_shape
    model = copy.deepcopy(teacher.model).cpu().float().eval()
    full = count_flops(model, shape)
    taylor = variant.startswith("taylor")
    importance = (
        tp.importance.GroupTaylorImportance()
        if taylor
        else tp.importance.GroupMagnitudeImportance(p=2)
    )
    ratio = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.BasePruner(
            model,
            torch.zeros(1, *shape),
            importance=importance,
            global_pruning=variant != "magnitude" and variant != "taylor",
            isomorphic=variant.endswith("isomorphic"),
            pruning_ratio=0.9,
            max_pruning_ratio=0.95,
            iterative_steps=FINE_STEPS,
            ignored_layers=_classifier(model, teacher.num_classes),
            round_to=round_to,
        )
        for _ in range(FINE_STEPS):
            if taylor:
                model.zero_grad()
                for images, labels in gradient_batches(ctx, seed):
                    nn.functional.cross_entropy(model(images), labels).backward()
            pruner.step()
            ratio = count_flops(model, shape) / full
            if ratio <= macs:
                break
    model.zero_grad(set_to_none=True)
    mflops = count_flops(model, shape) / 1e6
    return DerivedPoint(teacher.arch, 0, 0.0, model, count_params(model), mflops, ratio, round_to)


def main(argv: list[str] | None = None) -> None:
    parser = derived_settings.build_parser()
    parser.description = __doc__.split("\n")[0]
    parser.add_argument("--variants", default="magnitude,taylor", help=f"any of {VARIANTS}")
    parser.add_argument("--macs", type=float, default=0.56, help="prune until MACs ratio <= this")
    parser.add_argument("--before-only", action="store_true")
    parser.set_defaults(results=Path("/tmp/derived224/derived_importance.jsonl"))
    args = parser.parse_args(argv)
    ctx = derived_settings.open_run(args)
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; choose from {VARIANTS}")
        point = prune_to(ctx, variant, args.macs, args.round_to, args.seed)
        label = {"variant": variant, "round_to": args.round_to, "macs_ratio": point.macs_ratio}
        if args.before_only:
            teacher, data = ctx.teacher, ctx.data
            before = prepare_derived(point, data.train, data.val, teacher.mean, teacher.std, 0)
            row = {
                **label,
                "params": point.params,
                "val_before": before["val_top1_before_training"],
            }
            print(json.dumps(row), flush=True)
        else:
            derived_settings.train_and_measure(args, ctx, point, label)


if __name__ == "__main__":
    main()
