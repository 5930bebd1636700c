"""The 224-px photo case with derived (width-pruned) vs fresh vs pre-trained students (#21).

Each row is one ``compressor run`` subprocess on the data and teacher of
``benchmarks/photo224.py`` (6 CIFAR-10 classes upscaled to 200x150 JPEGs; a torchvision teacher
trained at 224 px with torchvision's preprocessing)::

    python -m compressor run --teacher <teacher.pt> --arch <teacher arch> --data <work>/data \\
        --profile mobile-224 --out <work>/runs/<name> --epochs 8 --overwrite --no-data-cache \\
        --seed S  <arm flags>

Arms (``--arms``, comma-separated; ``--seeds`` likewise):

* ``pruned@LR``: ``--student-source pruned --pruned-lr LR`` (a width-pruned copy of the teacher)
* ``fresh``: ``--student-source fresh`` (the ladder, random init)
* ``init``: ``--student-source fresh --student-init <work>/init --candidates <init arch>``
  (the ladder architecture pre-trained on 4 other CIFAR classes by
  ``benchmarks/student_init224.py``; built with its functions when missing)

``--teacher-arch`` (default mobilenet_v3_small) picks the teacher: mobilenet_v3_small is
photo224's ``<work>/teacher.pt``; any other torchvision classifier (e.g. resnet18) is trained
with photo224's recipe (``photo224.train_teacher(arch=...)``) into ``<work>/teacher_<arch>.pt``.
Teachers and the pre-trained init are cached in ``--work``. ``--test-per-class N`` (default
100, photo224's 600 test images) measures on N test images per class instead (the same training
images, so the same teacher and validation split): at 600 images the standard error of a top-1
is about 2 points, as wide as most of the 3-point gate.

Every finished run is appended at once as one JSON line to ``--results`` (a killed benchmark
keeps the earlier rows); ``--table-only`` prints the table from that file. Peak RSS is
``/usr/bin/time -v``'s "Maximum resident set size" of that one run (per process tree, not
cumulative across runs); the 1-minute load average is read just before each run starts.

    nice -n 5 python benchmarks/derived224.py --work /tmp/photo224 \\
        --arms pruned@0.005,pruned@0.01,pruned@0.02 --seeds 0
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import photo224  # noqa: E402  (the case's data and teacher)
import pruning_cost  # noqa: E402  (cpu_info)
import student_init224  # noqa: E402  (the pre-trained student for the init arm)

from compressor.report.provenance import versions  # noqa: E402

PHOTO224_TEST_PER_CLASS = 100  # benchmarks/photo224.py's test photos per class (600 in all)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cifar", type=Path, default=REPO.parent / "shared/datasets/cifar10")
    p.add_argument("--work", type=Path, default=Path("/tmp/photo224"))
    p.add_argument("--arms", default="pruned@0.01,fresh", help="pruned@LR, fresh, init")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--profile", default="mobile-224")
    p.add_argument(
        "--test-per-class",
        type=int,
        default=PHOTO224_TEST_PER_CLASS,
        help="test images per class (photo224 uses 100: 600 in all, a standard error of about "
        "2 points on top-1); other counts go to <work>/data-test<N>, same training images",
    )
    p.add_argument(
        "--accuracy-only-profile",
        action="store_true",
        help="use student_init224's copy of mobile-224 whose budget cannot fail (1 thread, "
        "1000 ms, min_speedup 1.0): selection then ships the least-pruned step, the same "
        "student in every run, for comparing training settings on a loaded host",
    )
    p.add_argument("--teacher-arch", default="mobilenet_v3_small")
    p.add_argument("--teacher-epochs", type=int, default=8, help="only if no teacher is cached")
    p.add_argument("--init-arch", default="mobilenet_v3_small_x0.5",
                   help="the init arm's student (pre-trained by student_init224)")  # fmt: skip
    p.add_argument("--pretrain-per-class", type=int, default=1000, help="init arm, if not cached")
    p.add_argument("--pretrain-epochs", type=int, default=10, help="init arm, if not cached")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for teacher training and pre-training in this process (on a "
        "loaded 2-core host 2 OpenMP threads ran far slower than 1; see docs/benchmarks.md)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=0,
        help="run a row again (up to N times) when selection refused every candidate (exit 2): "
        "on a loaded host that verdict depends on the load; every attempt is kept",
    )
    p.add_argument("--results", type=Path, default=Path("/tmp/derived224/derived224.jsonl"))
    p.add_argument("--table-only", action="store_true", help="print the table from --results")
    return p.parse_args(argv)


def teacher_path(args: argparse.Namespace) -> Path:
    if args.teacher_arch == "mobilenet_v3_small":
        return args.work / "teacher.pt"  # photo224's own cache
    return args.work / f"teacher_{args.teacher_arch}.pt"


def data_dir(args: argparse.Namespace) -> Path:
    """photo224's data (250 training images per class) with ``--test-per-class`` test images."""
    if args.test_per_class == PHOTO224_TEST_PER_CLASS:
        return args.work / "data"  # photo224's own cache
    return args.work / f"data-test{args.test_per_class}"


def ensure_teacher(args: argparse.Namespace) -> Path:
    path = teacher_path(args)
    if not path.exists():
        began = time.perf_counter()
        print(
            f"training the {args.teacher_arch} teacher ({args.teacher_epochs} epochs)", flush=True
        )
        photo224.train_teacher(
            args.work / "data", path, args.teacher_epochs, arch=args.teacher_arch
        )
        info = {"arch": args.teacher_arch, "epochs": args.teacher_epochs,
                "seconds": time.perf_counter() - began,
                "test_top1_torchvision": photo224.torchvision_top1(
                    args.work / "data", path, arch=args.teacher_arch)}  # fmt: skip
        path.with_suffix(".json").write_text(json.dumps(info, indent=1))
        print(f"teacher ready: {info}", flush=True)
    return path


def ensure_init(args: argparse.Namespace) -> Path:
    folder = args.work / "init"
    if not (folder / f"{args.init_arch}.pt").exists():
        student_init224.pretrain(
            student_init224.parse_args(
                [
                    "--cifar",
                    str(args.cifar),
                    "--work",
                    str(args.work),
                    "--arch",
                    args.init_arch,
                    "--threads",
                    str(args.threads),
                    "--pretrain-per-class",
                    str(args.pretrain_per_class),
                    "--pretrain-epochs",
                    str(args.pretrain_epochs),
                ]
            )
        )
    return folder


def arm_flags(arm: str, args: argparse.Namespace) -> list[str]:
    if arm.startswith("pruned@"):
        return ["--student-source", "pruned", "--pruned-lr", arm.split("@", 1)[1]]
    if arm == "fresh":
        return ["--student-source", "fresh"]
    if arm == "init":
        folder = ensure_init(args)
        return ["--student-source", "fresh", "--student-init", str(folder),
                "--candidates", args.init_arch]  # fmt: skip
    raise SystemExit(f"unknown arm {arm!r} (pruned@LR, fresh, init)")


def peak_rss_gib(time_file: Path) -> float | None:
    try:
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_file.read_text())
    except OSError:
        return None
    return int(found.group(1)) / 2**20 if found else None


def run_one(args: argparse.Namespace, teacher: Path, arm: str, seed: int) -> dict[str, Any]:
    flags = arm_flags(arm, args)
    name = f"{args.teacher_arch}_{arm.replace('@', '-lr')}_s{seed}"
    if data_dir(args).name != "data":
        name += f"_test{args.test_per_class}"
    if args.accuracy_only_profile:
        name += "_accuracy-only"
    out = args.work / "runs" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "compressor", "run", "--teacher", str(teacher),
        "--arch", args.teacher_arch, "--data", str(data_dir(args)),
        "--profile", args.profile, "--out", str(out), "--epochs", str(args.epochs),
        "--overwrite", "--no-data-cache", "--seed", str(seed), *flags,
    ]  # fmt: skip
    log, time_file = out.parent / f"{name}.log", out.parent / f"{name}.time"
    print(f"$ {' '.join(cmd)}  (log {log})", flush=True)
    load = os.getloadavg()
    date = datetime.datetime.now().isoformat(timespec="seconds")
    began = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(["/usr/bin/time", "-v", "-o", str(time_file), *cmd], cwd=REPO,
                              stdout=fh, stderr=subprocess.STDOUT, check=False)  # fmt: skip
    wall = time.perf_counter() - began
    text = log.read_text(errors="replace")
    row: dict[str, Any] = {
        "arm": arm, "seed": seed, "teacher_arch": args.teacher_arch, "epochs": args.epochs,
        "profile": args.profile, "command": " ".join(cmd), "date": date,
        "exit_code": proc.returncode,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "wall_s": wall,
        "peak_rss_gib": peak_rss_gib(time_file),
        "loadavg_start": load, "loadavg_end": os.getloadavg(), "log": str(log),
        "log_tail": text[-1500:],
    }  # fmt: skip
    report_path = out / "report.json"
    if report_path.exists() and report_path.stat().st_mtime >= time.time() - wall - 5:
        report = json.loads(report_path.read_text())
        sel, acc, dist = report["selection"], report["accuracy"], report["distillation"]
        derived = sel.get("derived") or {}
        speed = report.get("speedup") or {}
        row.update(
            chosen=sel["chosen"],
            student_source=sel.get("student_source"),
            val_top1_before_training=derived.get("val_top1_before_training"),
            best_epoch=dist["best_epoch"],
            best_val_top1=dist["best_val_top1"],
            val_top1_per_epoch=[r["val_top1"] for r in dist["history"]],
            teacher_val_top1=dist.get("teacher_val_top1"),
            student_top1=acc["student_top1"],
            teacher_top1=acc["teacher_top1"],
            top1_drop=acc["top1_drop"],
            test_images=acc["images"],
            speedup=speed.get("speedup"),
            teacher_ms=speed.get("teacher_ms"),
            student_ms=speed.get("student_ms"),
            param_ratio=report["size"]["param_ratio"],
            student_mflops=report["size"]["student_mflops"],
            teacher_mflops=report["size"]["teacher_mflops"],
            failed_gates=report.get("failed_gates"),
            train_seconds=dist.get("seconds"),
            student_init=dist.get("student_init"),
        )
    return row


def refused_at_selection(row: dict[str, Any]) -> bool:
    """Exit 2 with no report because no candidate qualified: on a loaded host the latency
    timings (and so this verdict) change from one attempt to the next."""
    return (
        row["exit_code"] == 2 and "student_top1" not in row and "qualif" in row.get("log_tail", "")
    )


def arm_label(r: dict[str, Any]) -> str:
    """The arm, with the profile when it is not mobile-224 and the attempt when retried."""
    label = r["arm"]
    if r.get("profile") != "mobile-224":
        label += f" ({Path(r['profile']).stem})"
    if r.get("attempt", 1) > 1:
        label += f", attempt {r['attempt']}"
    return label


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| teacher | arm | seed | exit | chosen student | source | val top-1 % before training | "
        "best val epoch / top-1 % | student test top-1 % | teacher test top-1 % | drop (points) | "
        "speedup (alternating) | param ratio | wall s | peak RSS GiB | load avg at start |",
        "| --- | --- | ---: | ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: | ---: |",
    ]
    for r in rows:
        rss = "-" if r.get("peak_rss_gib") is None else f"{r['peak_rss_gib']:.2f}"
        head = f"| {r['teacher_arch']} | {arm_label(r)} | {r['seed']} | {r['exit_code']} | "
        tail = f" | {r['wall_s']:.0f} | {rss} | {r['loadavg_start'][0]:.2f} |"
        if "student_top1" not in r:
            last = r.get("log_tail", "").strip().splitlines()[-1:] or [""]
            lines.append(head + f"no report: {last[0][:120]} | | | | | | | | | " + tail[3:])
            continue
        speed = "-" if r.get("speedup") is None else f"{r['speedup']:.2f}x"
        lines.append(
            head
            + f"{r['chosen']} | {r['student_source']} | {pct(r['val_top1_before_training'])} | "
            f"{r['best_epoch']} / {pct(r['best_val_top1'])} | {pct(r['student_top1'])} | "
            f"{pct(r['teacher_top1'])} | {100 * r['top1_drop']:.2f} | {speed} | "
            f"{r['param_ratio']:.2f}x" + tail
        )
    lr_rows = [r for r in rows if r["arm"].startswith("pruned@") and r["seed"] == 0
               and r.get("best_val_top1") is not None
               and r["teacher_arch"] == "mobilenet_v3_small"]  # fmt: skip
    if len({r["arm"] for r in lr_rows}) > 1:
        best = max(lr_rows, key=lambda r: r["best_val_top1"])
        lines.append("")
        lines.append(
            "learning rate by best validation top-1 (mobilenet_v3_small, seed 0): "
            + ", ".join(
                f"{r['arm'].split('@')[1]}: {pct(r['best_val_top1'])}% ({r['chosen']})"
                for r in lr_rows
            )
            + f" -> {best['arm'].split('@')[1]}"
        )
    return "\n".join(lines)


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def environment() -> str:
    cpu, vnni = pruning_cost.cpu_info()
    vers = ", ".join(f"{k} {v}" for k, v in versions().items())
    return f"cpu: {cpu} ({'AVX-512 VNNI' if vnni else 'no avx512_vnni flag'}), " \
           f"{os.cpu_count()} cores; {vers}"  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.table_only:
        torch.set_num_threads(args.threads)
        args.work.mkdir(parents=True, exist_ok=True)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        # photo224's own data trains the teacher; data_dir is the same folder unless
        # --test-per-class differs (each call is a no-op once built)
        photo224.build_photos(args.cifar, args.work / "data", 250, PHOTO224_TEST_PER_CLASS)
        photo224.build_photos(args.cifar, data_dir(args), 250, args.test_per_class)
        teacher = ensure_teacher(args)
        if args.accuracy_only_profile:
            path = args.work / "mobile-224-accuracy-only.toml"
            path.write_text(student_init224.SHARED_HOST_PROFILE)
            args.profile = str(path)
        for seed in args.seeds:
            for arm in args.arms.split(","):
                for attempt in range(args.retries + 1):
                    row = run_one(args, teacher, arm, seed)
                    row["attempt"] = attempt + 1
                    with args.results.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    print(f"{arm} seed {seed}: exit {row['exit_code']}, "
                          f"student top-1 {pct(row.get('student_top1'))}, "
                          f"{row['wall_s']:.0f} s", flush=True)  # fmt: skip
                    if not refused_at_selection(row):
                        break
    print("\n" + environment())
    print(f"results: {args.results}\n")
    print(table(read_rows(args.results)))


if __name__ == "__main__":
    main()
