"""Behaviour unchanged? ``compressor demo`` in two source trees, their report.json compared.

Runs ``python -m compressor demo --out WORK/<label> --json`` with ``PYTHONPATH`` set to each tree
(the same Python and packages), then compares the two report.json files key by key after
dropping what legitimately differs between two runs of the same code: timings and everything
derived from them, paths, checksums, dates, versions and the data-storage memory budget. Every
remaining difference is printed with its key path; the exit code is the number of differences
(0: the reports agree).

    python benchmarks/report_diff.py --old /tmp/base --new . --work /tmp/report_diff

(``git worktree add /tmp/base <commit>`` gives the old tree; ``--compare-only`` compares the
reports already in ``--work``.) Gates judged on a timing keep only their name, and a
candidate's speed verdict is dropped: a latency decision near its noise can differ between two
runs of the same code. A different chosen student is said in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# keys (last path component) whose values are measurements, places or stamps, not behaviour
VOLATILE = re.compile(
    r"(_ms$|^ms$|_seconds$|^seconds$|wall|spread|speedup|^ci_|coverage|^rounds$|cpu|"
    r"contend|pressure|attempts|sha256|checksum|^path$|_path$|model$|^created_utc$|utc|"
    r"^command$|^versions$|^hardware$|^artifacts$|memory|budget_bytes|^iterations$|"
    r"^verdict$|^predicted|^calibrat|^latency$|^teacher$|^student$|^remembered$|^size_bytes$|"
    r"^onnx_bytes$|^timings?$|^epoch_seconds$|^throughput|^root$|^source$|^faster$|"
    r"^speed_verdict$)"
)
TIMED_GATES = ("latency_", "faster_than_teacher", "int8_latency")  # their values are timings
SECONDS = re.compile(r"\d+(\.\d+)? s\b")  # "(0.5 s to prune)" in a sentence


def normalise_text(value: str) -> str:
    return SECONDS.sub("N s", value)


def strip(value: Any, path: str = "") -> Any:
    if isinstance(value, dict):
        if str(value.get("name", "")).startswith(TIMED_GATES):  # a gate judged on a timing
            return {"name": value["name"]}
        return {k: strip(v, f"{path}.{k}") for k, v in value.items() if not VOLATILE.search(k)}
    if isinstance(value, list):
        return [strip(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return normalise_text(value) if isinstance(value, str) else value


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in {'new' if key in b else 'old'}")
            else:
                out += differences(a[key], b[key], f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in differences(x, y, f"{path}[{i}]")]  # fmt: skip
    if isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-9 * max(1, abs(a)):
        return []
    return [] if a == b else [f"{path}: {json.dumps(a)[:120]} -> {json.dumps(b)[:120]}"]


def run_demo(tree: Path, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve()),
           "COMPRESSOR_SELECTION_MEMORY": str(out / "selections.json")}  # fmt: skip
    started = time.perf_counter()
    command = [sys.executable, "-m", "compressor", "demo", "--out", str(out), "--json"]
    proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    print(f"{tree}: exit {proc.returncode} in {time.perf_counter() - started:.0f} s", flush=True)
    report = out / "run" / "report.json"
    if not report.is_file():
        raise SystemExit(f"{tree}: no report.json ({proc.stderr.strip().splitlines()[-1:]})")
    return json.loads(report.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--old", type=Path, required=True)
    p.add_argument("--new", type=Path, default=Path("."))
    p.add_argument("--work", type=Path, default=Path("/tmp/report_diff"))
    p.add_argument("--compare-only", action="store_true", help="compare the reports in --work")
    args = p.parse_args()
    if args.compare_only:
        old, new = (json.loads((args.work / side / "run" / "report.json").read_text())
                    for side in ("old", "new"))  # fmt: skip
    else:
        old = run_demo(args.old, args.work / "old")
        new = run_demo(args.new, args.work / "new")
    chosen = (old["selection"]["chosen"], new["selection"]["chosen"])
    if chosen[0] != chosen[1]:
        print(f"note: the chosen student differs ({chosen[0]} -> {chosen[1]}): a latency "
              "decision, so later sections differ too")  # fmt: skip
    found = differences(strip(old), strip(new))
    for line in found:
        print(line)
    compared = len(json.dumps(strip(old)))
    print(f"{len(found)} differences in {compared:,} characters of compared report.json")
    raise SystemExit(min(len(found), 100))


if __name__ == "__main__":
    main()
