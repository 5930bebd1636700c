"""Does rounding pruned widths to onnxruntime's channel block buy latency? (issue #21)

onnxruntime's CPU convolutions run in MLAS's blocked NCHWc layout: 16 floats per channel block
with AVX-512F, 8 with AVX2, computed in whole blocks of channels, so pruning a 16-wide layer
to 8 on an AVX-512 host removes MACs but little time. This prunes one teacher twice, with
widths rounded to 8 and to 16 (``prune_trajectory(..., round_to=N)``, everything else as
``compressor run`` does it), and times every step against the teacher with compressor's own
paired timer (``compressor.latency.paired.measure_paired``: the profile's threads, batch and
percentile, fresh sessions in alternating blocks, a 90% interval on the ratio). Both
trajectories are timed in the same run, one after the other; nothing else should run.

    python benchmarks/channel_block.py [--arch mobilenet_v3_small] [--teacher weights.pt]

Latency does not depend on weight values, so random weights are used unless ``--teacher`` names
a state dict of ``--arch``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import derived224  # noqa: E402  (environment line)

from compressor.export.to_onnx import onnx_bytes  # noqa: E402
from compressor.latency.cpu import channel_block  # noqa: E402
from compressor.latency.paired import measure_paired  # noqa: E402
from compressor.latency.profiles import load_profile  # noqa: E402
from compressor.latency.timing import TimingSettings  # noqa: E402
from compressor.models.pruning import prune_trajectory  # noqa: E402
from compressor.models.registry import build_model  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="mobilenet_v3_small")
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--teacher", type=Path, default=None, help="a state dict of --arch")
    p.add_argument("--profile", default="mobile-224")
    p.add_argument("--blocks", default="8,16", help="widths rounded to each of these")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    profile = load_profile(args.profile)
    shape = profile.input_shape
    torch.manual_seed(0)
    teacher = build_model(args.arch, args.classes).eval()
    if args.teacher is not None:
        teacher.load_state_dict(torch.load(args.teacher, weights_only=True))
    settings = TimingSettings.from_profile(profile)
    teacher_graph = onnx_bytes(teacher, shape, profile.opset)
    print(derived224.environment())
    print(f"this host's channel block (compressor.latency.cpu.channel_block): {channel_block()}")
    print(f"profile {profile.name}: {profile.intra_op_threads} threads, "
          f"batch {profile.batch_size}, p{profile.percentile:g}; "
          f"bar {profile.min_speedup:g}x\n")  # fmt: skip
    print("| widths rounded to | step | MACs ratio | speedup over the teacher (90% CI, rounds) "
          "| teacher ms | student ms | clears the bar |")  # fmt: skip
    print("| ---: | ---: | ---: | --- | ---: | ---: | --- |")
    for block in (int(b) for b in args.blocks.split(",")):
        trajectory = prune_trajectory(teacher, args.arch, args.classes, shape, round_to=block)
        for point in trajectory.points:
            timing = measure_paired(
                teacher_graph, onnx_bytes(point.model, shape, profile.opset), shape, settings,
                profile.percentile, threshold=profile.min_speedup,
            )  # fmt: skip
            print(
                f"| {block} | {point.step} | {point.macs_ratio:.2f} | "
                f"{timing.ratio:.2f}x ({timing.ci_low:.2f}-{timing.ci_high:.2f}, "
                f"{timing.rounds}) | {timing.reference.at_percentile_ms:.3f} | "
                f"{timing.candidate.at_percentile_ms:.3f} | "
                f"{timing.verdict(profile.min_speedup)}"
                f"{' (contended)' if timing.contended else ''} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
