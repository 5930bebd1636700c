"""Latency decisions that repeat (#22): the same command on the same host, idle and loaded.

What it runs, each as a real ``compressor`` subprocess or real onnxruntime sessions:

1. **Selection runs.** ``compressor select --teacher T --profile P --json`` for the 224-px
   ``mobile-224`` case (a ``mobilenet_v3_small`` teacher) and the 32-px ``cpu-1thread`` case (a
   ``cifar_resnet20_w32`` teacher), ``--runs`` times idle and ``--runs`` times with one core kept
   busy by the load generator below. The runs of one series share one new selection-memory
   file (``COMPRESSOR_SELECTION_MEMORY``), as repeated runs on one host do: the first searches,
   later ones re-time the remembered student and keep it while it holds; ``--no-memory`` gives
   every run an empty file (each searches afresh). Counted: how often the modal student is
   chosen, how often it was kept from memory, and how often a run exits 3 (inconclusive)
   instead of choosing.
2. **An identical pair.** The teacher's graph against an identical copy of itself, timed by
   :func:`compressor.latency.paired.measure_paired` exactly as selection times a candidate
   against the teacher, ``--runs`` times idle and loaded. Counted: ratios within 1.00 +/- 0.10.
3. **``compressor verify`` under load.** A student that passes idle is verified against a
   profile whose budget is 2x its slowest of 3 idle p90s, ``--verify-runs`` times idle and
   loaded (a small 224-px student's p90 varies 0.5-1.0 ms between idle sessions). Counted:
   exit codes (0 pass, 1 fail, 3 inconclusive).
4. **Cost.** Idle ``compressor select`` wall time of this tree against ``--baseline`` (a
   checkout of the commit before paired timing, e.g. ``git worktree add /tmp/base 330a434``),
   run alternately, ``--cost-runs`` each.
5. **The estimator.** The teacher's graph timed ``--runs`` times as ``measure_onnx`` does (5
   rounds, a fresh session each, together the profile's minimums); the spread (max-min over
   median) across repeats of the pooled p90, of the median of per-round p90s and of a single
   session's p90 (the first round alone, the protocol before #22), idle and loaded.

**Load generator:** one ``python -c "while True: pass"`` process (one core at 100%), started
before and stopped after each loaded measurement; nothing else runs.

Teachers: ``--teacher224`` / ``--teacher32`` when given (e.g. the worked example's trained
teacher); otherwise random-weight teachers are built and saved with ``save_bundle``. Latency does
not depend on weight values for these dense CNNs, and the pruning trajectory prunes every layer
by the same ratio, so the candidates' shapes do not either.

    python benchmarks/repeatability.py --work /tmp/repeat --baseline /tmp/base \\
        --teacher224 /tmp/photo224/teacher.pt --verify-model /tmp/photo224/runs/x/student.onnx \\
        --verify-data /tmp/photo224/data
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import pruning_cost  # noqa: E402  (CPU model)

LOADGEN = [sys.executable, "-c", "while True: pass"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/repeat"))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--verify-runs", type=int, default=5)
    p.add_argument("--cost-runs", type=int, default=3)
    p.add_argument("--teacher224", type=Path, default=None)
    p.add_argument("--teacher224-arch", default="mobilenet_v3_small")
    p.add_argument("--teacher32", type=Path, default=None)
    p.add_argument("--verify-model", type=Path, default=None)
    p.add_argument("--verify-data", type=Path, default=None)
    p.add_argument("--baseline", type=Path, default=None, help="tree of the baseline commit")
    p.add_argument("--parts", default="select,pair,verify,cost,estimator")
    p.add_argument("--cases", default="mobile-224,cpu-1thread")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                   help="selection runs of a series share one selection-memory file, as "
                        "runs on one host (or a CI job that caches the file) do")  # fmt: skip
    return p.parse_args(argv)


@contextmanager
def loaded(on: bool) -> Iterator[None]:
    """One core kept busy by a spinning Python process while ``on``."""
    proc = subprocess.Popen(LOADGEN) if on else None
    try:
        if proc:
            time.sleep(0.5)
        yield
    finally:
        if proc:
            proc.kill()
            proc.wait()


def build_teacher(path: Path, arch: str, classes: int, size: int) -> Path:
    """A random-weight teacher bundle (latency and pruned shapes do not depend on weights)."""
    import torch

    from compressor.models.checkpoint import save_bundle
    from compressor.models.registry import build_model

    if path.exists():
        return path
    torch.manual_seed(0)
    model = build_model(arch, classes, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_bundle(path, model, arch, num_classes=classes, in_channels=3, input_size=(size, size),
                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                class_names=[f"c{i}" for i in range(classes)])  # fmt: skip
    return path


def compressor_cmd(
    tree: Path, *args: str, memory: Path | None = None
) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, seconds) of ``python -m compressor`` run from ``tree``.

    ``memory`` is the selection-memory file the run may use; without one each run gets a new,
    empty file, so it searches as a first run does (and never reads the user's own cache)."""
    if memory is None:
        memory = Path(tempfile.mkdtemp(prefix="repeat-memory-")) / "selections.json"
    env = {**os.environ, "PYTHONPATH": str(tree), "COMPRESSOR_SELECTION_MEMORY": str(memory)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "compressor", *args], cwd=tree, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


ARCHS: dict[Path, str] = {}  # teachers saved as plain state dicts: their architecture


def select_once(
    tree: Path, teacher: Path, profile: str, memory: Path | None = None
) -> dict[str, Any]:
    arch = ["--arch", ARCHS[teacher]] if teacher in ARCHS else []
    code, out, err, seconds = compressor_cmd(
        tree, "select", "--teacher", str(teacher), *arch, "--profile", profile, "--json",
        memory=memory,
    )  # fmt: skip
    row: dict[str, Any] = {"exit": code, "seconds": round(seconds, 1)}
    if code == 0:
        sel = json.loads(out)
        row["chosen"] = sel["chosen"]
        row["teacher_ms"] = (sel.get("teacher") or {}).get("at_percentile_ms")
        chosen = next(c for c in sel["candidates"] if c["name"] == sel["chosen"])
        row["speedup"], row["ci"] = chosen.get("speedup"), chosen.get("speedup_ci")
        row["kept"] = bool((sel.get("remembered") or {}).get("kept"))
    else:
        row["error"] = (err.strip().splitlines() or [""])[-1][:300]
    return row


def part_select(args: argparse.Namespace, teachers: dict[str, Path], log: Any) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for case in args.cases.split(","):
        for busy in (False, True):
            rows = []
            series = f"{case}-{'loaded' if busy else 'idle'}"
            memory = args.work / f"memory-{series}-{int(time.time())}" / "selections.json"
            for i in range(args.runs):
                with loaded(busy):  # one memory file per series (its first run searches)
                    row = select_once(REPO, teachers[case], case,
                                      memory if args.memory else None)  # fmt: skip
                rows.append(row)
                log({"part": "select", "case": case, "loaded": busy, "run": i, **row})
            results[f"{case}|{'loaded' if busy else 'idle'}"] = rows
    return results


def part_pair(args: argparse.Namespace, teachers: dict[str, Path], log: Any) -> dict[str, Any]:
    from compressor.export.to_onnx import onnx_bytes
    from compressor.latency.paired import measure_paired
    from compressor.latency.profiles import load_profile
    from compressor.latency.timing import TimingSettings
    from compressor.models.checkpoint import load_bundle

    results: dict[str, Any] = {}
    for case in args.cases.split(","):
        profile = load_profile(case)
        model = load_bundle(teachers[case], arch=ARCHS.get(teachers[case])).model
        graph = onnx_bytes(model, profile.input_shape, profile.opset)
        for busy in (False, True):
            rows = []
            for i in range(args.runs):
                with loaded(busy):
                    t = measure_paired(graph, bytes(graph), profile.input_shape,
                                       TimingSettings.from_profile(profile), profile.percentile,
                                       threshold=profile.min_speedup)  # fmt: skip
                row = {"ratio": t.ratio, "ci": [t.ci_low, t.ci_high], "rounds": t.rounds,
                       "contended": t.contended, "cpu_share": t.cpu.cpu_share,
                       "attempts": t.attempts}  # fmt: skip
                rows.append(row)
                log({"part": "pair", "case": case, "loaded": busy, "run": i, **row})
            results[f"{case}|{'loaded' if busy else 'idle'}"] = rows
    return results


def part_verify(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    if args.verify_model is None or args.verify_data is None:
        return {}
    from compressor.latency.profiles import load_profile
    from compressor.latency.timing import TimingSettings, measure_onnx

    base = load_profile("mobile-224")
    settings = TimingSettings.from_profile(base)
    idle = max(
        (measure_onnx(args.verify_model, base.input_shape, settings, base.percentile, seed=i)
         for i in range(3)),
        key=lambda stats: stats.at_percentile_ms,
    )  # fmt: skip
    budget = round(2.0 * idle.at_percentile_ms, 3)  # passes idle: sessions vary 0.5-1.0 ms
    source = (REPO / "profiles" / "mobile-224.toml").read_text()
    data = tomllib.loads(source)
    profile_path = args.work / "mobile-224-tight.toml"
    profile_path.write_text(
        source.replace('name = "mobile-224"', 'name = "mobile-224-tight"').replace(
            f"latency_ms = {data['budget']['latency_ms']}", f"latency_ms = {budget}"
        )
    )
    results: dict[str, Any] = {"idle_p90_ms": idle.at_percentile_ms, "budget_ms": budget}
    for busy in (False, True):
        rows = []
        for i in range(args.verify_runs):
            with loaded(busy):
                code, out, err, seconds = compressor_cmd(
                    REPO, "verify", str(args.verify_model), "--data",
                    str(args.verify_data), "--profile", str(profile_path), "--json",
                )  # fmt: skip
            row: dict[str, Any] = {"exit": code, "seconds": round(seconds, 1)}
            if out.strip().startswith("{"):
                res = json.loads(out)
                gate = next(g for g in res["gates"] if g["name"].startswith("latency_"))
                row.update(p90_ms=res["latency"]["at_percentile_ms"], gate=gate["detail"],
                           contended=res["contention"]["contended"])  # fmt: skip
            else:
                row["error"] = (err.strip().splitlines() or [""])[-1][:300]
            rows.append(row)
            log({"part": "verify", "loaded": busy, "run": i, **row})
        results["loaded" if busy else "idle"] = rows
    return results


def part_cost(args: argparse.Namespace, teachers: dict[str, Path], log: Any) -> dict[str, Any]:
    if args.baseline is None:
        return {}
    results: dict[str, list[float]] = {"baseline": [], "this": []}
    for case in args.cases.split(","):
        for i in range(args.cost_runs):
            for label, tree in (("baseline", args.baseline), ("this", REPO)):
                row = select_once(tree, teachers[case], case)
                results.setdefault(f"{case}|{label}", []).append(row["seconds"])
                log({"part": "cost", "case": case, "tree": label, "run": i, **row})
    return results


def part_estimator(args: argparse.Namespace, teachers: dict[str, Path], log: Any) -> dict:
    from compressor.export.to_onnx import onnx_bytes
    from compressor.latency.profiles import load_profile
    from compressor.latency.timing import (
        ROUNDS,
        TimingSettings,
        open_session,
        round_quota,
        time_block,
    )
    from compressor.models.checkpoint import load_bundle

    results: dict[str, Any] = {}
    for case in args.cases.split(","):
        profile = load_profile(case)
        model = load_bundle(teachers[case], arch=ARCHS.get(teachers[case])).model
        graph = onnx_bytes(model, profile.input_shape, profile.opset)
        settings = TimingSettings.from_profile(profile)
        for busy in (False, True):
            pooled, median, single = [], [], []
            for _ in range(args.runs):
                iterations, seconds = round_quota(settings, ROUNDS)
                chunks = []
                with loaded(busy):
                    for _ in range(ROUNDS):  # as measure_onnx: a fresh session per round
                        session, feed, _ = open_session(graph, profile.input_shape, settings, 0)
                        chunks.append(time_block(session, feed, iterations, seconds))
                        del session
                pooled.append(float(np.percentile(np.concatenate(chunks), profile.percentile)))
                single.append(float(np.percentile(chunks[0], profile.percentile)))
                median.append(float(np.median([np.percentile(c, profile.percentile)
                                               for c in chunks])))  # fmt: skip
            row = {"pooled": pooled, "median_of_rounds": median, "one_session": single}
            results[f"{case}|{'loaded' if busy else 'idle'}"] = row
            log({"part": "estimator", "case": case, "loaded": busy, **row})
    return results


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / float(np.median(values))


def table(res: dict[str, Any]) -> str:
    lines = ["## Selection runs", "",
             "| case | host | runs | modal student | same | kept from memory | "
             "inconclusive (exit 3) | other exits | median s |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for key, rows in res.get("select", {}).items():
        case, host = key.split("|")
        chosen = collections.Counter(r["chosen"] for r in rows if r["exit"] == 0)
        modal, same = chosen.most_common(1)[0] if chosen else ("-", 0)
        incon = sum(r["exit"] == 3 for r in rows)
        other = sum(r["exit"] not in (0, 3) for r in rows)
        secs = np.median([r["seconds"] for r in rows])
        kept = sum(bool(r.get("kept")) for r in rows)
        lines.append(f"| {case} | {host} | {len(rows)} | `{modal}` | {same} | {kept} | {incon} | "
                     f"{other} | {secs:.0f} |")  # fmt: skip
    lines += ["", "## Identical pair (the teacher's graph against itself)", "",
              "| case | host | runs | within 1.00 +/- 0.10 | ratios | contended |",
              "| --- | --- | ---: | ---: | --- | ---: |"]  # fmt: skip
    for key, rows in res.get("pair", {}).items():
        case, host = key.split("|")
        within = sum(abs(r["ratio"] - 1) <= 0.10 for r in rows)
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in rows)
        lines.append(f"| {case} | {host} | {len(rows)} | {within} | {ratios} | "
                     f"{sum(r['contended'] for r in rows)} |")  # fmt: skip
    verify = res.get("verify") or {}
    if verify:
        lines += ["", f"## compressor verify (budget {verify['budget_ms']} ms = 2x the slowest "
                  f"idle p90 {verify['idle_p90_ms']:.3f} ms)", "",
                  "| host | runs | exit 0 | exit 1 (FAIL) | exit 3 (inconclusive) | p90 ms |",
                  "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
        for host in ("idle", "loaded"):
            rows = verify[host]
            p90 = ", ".join(f"{r.get('p90_ms', float('nan')):.2f}" for r in rows)
            lines.append(f"| {host} | {len(rows)} | {sum(r['exit'] == 0 for r in rows)} | "
                         f"{sum(r['exit'] == 1 for r in rows)} | "
                         f"{sum(r['exit'] == 3 for r in rows)} | {p90} |")  # fmt: skip
    cost = res.get("cost") or {}
    if cost:
        lines += [
            "",
            "## Cost (idle selection wall time, alternating)",
            "",
            "| case | baseline s | this s | ratio |",
            "| --- | --- | --- | ---: |",
        ]
        for case in sorted({k.split("|")[0] for k in cost if "|" in k}):
            base, this = cost.get(f"{case}|baseline", []), cost.get(f"{case}|this", [])
            if base and this:
                lines.append(f"| {case} | {', '.join(f'{v:.0f}' for v in base)} | "
                             f"{', '.join(f'{v:.0f}' for v in this)} | "
                             f"{np.median(this) / np.median(base):.2f} |")  # fmt: skip
    est = res.get("estimator") or {}
    if est:
        lines += ["", "## Estimator (spread of the p90 over repeats: (max - min) / median)", "",
                  "| case | host | one session's p90 | pooled p90 | median of per-round p90s |",
                  "| --- | --- | ---: | ---: | ---: |"]  # fmt: skip
        for key, row in est.items():
            case, host = key.split("|")
            lines.append(f"| {case} | {host} | {spread(row['one_session']):.1%} | "
                         f"{spread(row['pooled']):.1%} | "
                         f"{spread(row['median_of_rounds']):.1%} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    cpu, vnni = pruning_cost.cpu_info()
    env = (
        f"cpu: {cpu} ({'AVX-512 VNNI' if vnni else 'no avx512_vnni flag'}), {os.cpu_count()} cores"
    )
    print(env, flush=True)
    teachers = {
        "mobile-224": args.teacher224
        or build_teacher(args.work / "teacher224.pt", "mobilenet_v3_small", 6, 224),
        "cpu-1thread": args.teacher32
        or build_teacher(args.work / "teacher32.pt", "cifar_resnet20_w32", 10, 32),
    }
    if args.teacher224 is not None:
        ARCHS[args.teacher224] = args.teacher224_arch
    log_path = args.work / "repeatability.jsonl"

    def log(row: dict[str, Any]) -> None:
        with log_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    parts = args.parts.split(",")
    results: dict[str, Any] = {"environment": env, "command": " ".join(sys.argv)}
    if "estimator" in parts:
        results["estimator"] = part_estimator(args, teachers, log)
    if "pair" in parts:
        results["pair"] = part_pair(args, teachers, log)
    if "verify" in parts:
        results["verify"] = part_verify(args, log)
    if "select" in parts:
        results["select"] = part_select(args, teachers, log)
    if "cost" in parts:
        results["cost"] = part_cost(args, teachers, log)
    (args.work / "repeatability.json").write_text(json.dumps(results, indent=1))
    print(env)
    print(table(results))


if __name__ == "__main__":
    main()
