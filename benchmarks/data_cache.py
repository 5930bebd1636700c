"""Start-up cost of loading an ImageFolder: decoding every run vs the disk cache, same run.

Rows: decode without a cache (the baseline), the first run with a cache (decode + write), the
second run (read), and the run after one image was touched (the entry is rebuilt).

    python benchmarks/data_cache.py --data ../shared/datasets/cifar10
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from compressor.data.splits import load_image_folder
from compressor.report.provenance import hardware, versions


def timed(label: str, rows: list[tuple[str, float]], **kwargs: object) -> None:
    began = time.perf_counter()
    splits = load_image_folder(**kwargs)  # type: ignore[arg-type]
    rows.append((label, time.perf_counter() - began))
    print(f"{label}: {rows[-1][1]:.1f} s ({len(splits.train)} train images)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/cifar10")
    parser.add_argument("--shape", default="3,32,32")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    print("command: python " + " ".join(sys.argv))
    print(f"hardware: {hardware()}\nversions: {versions()}")
    cache = Path(tempfile.mkdtemp(prefix="compressor-cache-"))
    common = {"root": Path(args.data), "input_shape": shape}
    rows: list[tuple[str, float]] = []
    try:
        timed("no cache, files not yet in the OS page cache", rows, **common)
        timed("no cache (decode)", rows, **common)
        timed("cache, first run (decode + write)", rows, cache_dir=cache, **common)
        timed("cache, second run (read)", rows, cache_dir=cache, **common)
        victim = next((Path(args.data) / "train").rglob("*.*"))
        stat = victim.stat()
        os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        try:
            timed("cache, after touching one image (rebuilt)", rows, cache_dir=cache, **common)
        finally:
            os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        size = sum(p.stat().st_size for p in cache.glob("*.pt"))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    base = rows[1][1]  # the second uncached load: the files are in the page cache, as later
    print("\n| load | seconds | vs decoding |\n| --- | ---: | ---: |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} | {base / seconds:.1f}x |")
    print(f"cache entries on disk: {size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
