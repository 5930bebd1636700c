"""Where a model's onnxruntime time goes, by operator and output resolution (issue #21).

Width pruning shrinks the work that scales with channels (convolution MACs); it barely shrinks
per-operator overheads: squeeze-excitation's global pool and its 1x1 convolutions on a 1x1
map, and the reorders in and out of MLAS's blocked NCHWc layout around them. This exports a
torchvision classifier (random weights: latency does not depend on weight values) the way
compressor does, runs it ``--runs`` times with onnxruntime's profiler on (batch 1,
``--threads`` intra-op threads, CPU), and prints the mean kernel time per run grouped by
(operator, output height), so the share that pruning cannot remove is visible.

    python benchmarks/op_time_profile.py --arch mobilenet_v3_small --threads 2 --without-se

Run it on an idle host; the profiler adds time to every node, so small operators' shares are
upper bounds. ``--without-se`` then times, without the profiler, the model against a copy whose
squeeze-excitation blocks are removed as derived students do
(``compressor.models.squeeze_excitation``), in interleaved rounds under ``--profile``'s
settings (``compressor.latency.paired.measure_paired``): what those blocks cost.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from compressor.export.to_onnx import onnx_bytes  # noqa: E402
from compressor.latency.cpu import cpu_flags  # noqa: E402
from compressor.latency.paired import measure_paired  # noqa: E402
from compressor.latency.profiles import load_profile  # noqa: E402
from compressor.latency.timing import TimingSettings  # noqa: E402
from compressor.models.registry import build_model  # noqa: E402
from compressor.models.squeeze_excitation import remove_squeeze_excitation  # noqa: E402


def kernel_events(trace: Path) -> list[dict]:
    """The profiler's per-node kernel-time events (one per node per run)."""
    events = json.loads(trace.read_text())
    return [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


def output_height(event: dict) -> str:
    """The node's first output's height, '-' when it has no 4-d output."""
    shapes = event.get("args", {}).get("output_type_shape") or [{}]
    dims = next(iter(shapes[0].values()), []) if shapes[0] else []
    return str(dims[2]) if len(dims) >= 4 else "-"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="mobilenet_v3_small")
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--without-se", action="store_true")
    p.add_argument("--profile", default="mobile-224", help="timing settings for --without-se")
    args = p.parse_args(argv)
    shape = (3, args.size, args.size)
    model = build_model(args.arch, args.classes).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as work:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(work) / "trace")
        session = ort.InferenceSession(
            onnx_bytes(model, shape, 18), options, providers=["CPUExecutionProvider"]
        )
        feed = {session.get_inputs()[0].name: np.random.rand(1, *shape).astype(np.float32)}
        for _ in range(args.runs):
            session.run(None, feed)
        events = kernel_events(Path(session.end_profiling()))
    per_group: dict[tuple[str, str], float] = collections.defaultdict(float)
    for event in events:
        op = event.get("args", {}).get("op_name", "?")
        per_group[(op, output_height(event))] += event["dur"] / args.runs
    total = sum(per_group.values())
    flags = cpu_flags()
    isa = "AVX-512F" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "other")
    print(f"{args.arch} at {args.size} px, batch 1, {args.threads} threads, {args.runs} runs; "
          f"CPU ISA {isa}, onnxruntime {ort.__version__}")  # fmt: skip
    print(f"kernel time per run: {total:.0f} us (profiler on)\n")
    print("| operator | output height | us per run | share |")
    print("| --- | ---: | ---: | ---: |")
    for (op, height), micros in sorted(per_group.items(), key=lambda kv: -kv[1])[: args.rows]:
        print(f"| {op} | {height} | {micros:.0f} | {100 * micros / total:.1f}% |")
    if args.without_se:
        profile = load_profile(args.profile)
        lean = copy.deepcopy(model)
        removed = remove_squeeze_excitation(lean)
        timing = measure_paired(
            onnx_bytes(model, shape, 18), onnx_bytes(lean, shape, 18), shape,
            TimingSettings.from_profile(profile), profile.percentile, threshold=1.0,
        )  # fmt: skip
        print(f"\nwithout its {len(removed)} squeeze-excitation blocks ({args.profile}: "
              f"{profile.intra_op_threads} threads, p{profile.percentile:g}): "
              f"{timing.describe()} faster")  # fmt: skip


if __name__ == "__main__":
    main()
