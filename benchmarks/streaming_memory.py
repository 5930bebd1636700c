"""Peak memory and images/s of `compressor run` with images in memory vs streamed from disk.

What it shows (docs/data.md): on generated 224-px ImageFolders of 2k and 20k images,
  * peak memory of one `compressor run --epochs 1` per (size, storage): the main process's
    high-water mark (VmHWM, read from /proc while it runs) and the peak of the summed PSS of
    the process and its decode workers (polled every 0.25 s). Not wait4's ru_maxrss: Linux
    carries the parent's RSS at fork/exec into the child's maximum, and this script holds the
    in-memory data of its own data-path measurement;
  * the run's training images/s (samples / seconds of its one epoch, from report.json) and
    its wall time;
  * the data path alone: images/s of one shuffled pass over the training split, 128 per
    batch, per storage (in memory: the one-off decode, then index gathers; streamed: the
    DataLoader workers' decode), and the one-image decode cost of PIL (what compressor uses)
    vs torchvision.io.decode_jpeg;
  * which storage the automatic choice picks for each size on this machine.

Data: CIFAR-10 training JPEGs (../shared/datasets/cifar10), upscaled to 256x192 (4:3) and
saved as JPEG (quality 90) into train/ (80%) and test/ (20%) folders, 10 classes. Models:
small 224-px ones (teacher mobilenet_v3_small_x1.0, trained here for one epoch; student
mobilenet_v3_small_x0.5), so the model's compute does not hide the data path. The decoded-
image disk cache is off (--no-data-cache) so every run decodes, and augmentation is off
(--no-augment: the teacher's logits are computed once, not every step) to keep the 20k-image
epoch within minutes on two cores; the data path is the same either way.

    python benchmarks/streaming_memory.py --work /tmp/streaming [--sizes 2000,20000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHAPE = (3, 224, 224)
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
TEACHER, STUDENT = "mobilenet_v3_small_x1.0", "mobilenet_v3_small_x0.5"


def build_folder(src: Path, dst: Path, total: int) -> Path:
    """``total`` CIFAR-10 training images as 256x192 JPEGs, 80/20 train/test (idempotent)."""
    if (dst / ".complete").exists():
        return dst
    classes = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())
    per_class = total // len(classes)
    for name in classes:
        files = sorted((src / "train" / name).glob("*.jpg"))[:per_class]
        for i, f in enumerate(files):
            split = "test" if i % 5 == 4 else "train"
            out = dst / split / name
            out.mkdir(parents=True, exist_ok=True)
            with Image.open(f) as im:
                im.convert("RGB").resize((256, 192), Image.Resampling.BICUBIC).save(
                    out / f.name, quality=90
                )
    (dst / ".complete").write_text("ok\n")
    return dst


def train_teacher(data: Path, path: Path) -> None:
    """One epoch of supervised training through the library (in memory, 224 px)."""
    if path.exists():
        return
    from compressor.data.splits import load_image_folder
    from compressor.losses.total import LossConfig
    from compressor.models.checkpoint import save_bundle
    from compressor.models.registry import build_model
    from compressor.train.loop import TrainConfig, distill

    splits = load_image_folder(data, SHAPE, seed=0)
    torch.manual_seed(0)
    model = build_model(TEACHER, len(splits.class_names), 3)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, device="cpu", bn_recalibration_images=256)
    result = distill(None, model, splits, MEAN, STD, LossConfig(method="ce"), cfg)
    save_bundle(
        path, result.student, TEACHER, num_classes=len(splits.class_names), in_channels=3,
        input_size=SHAPE[1:], mean=MEAN, std=STD, class_names=splits.class_names,
    )  # fmt: skip


PROFILE = """name = "bench-224"
description = "streaming benchmark: 224 px, generous budget"
[input]
shape = [3, 224, 224]
batch_size = 1
[runtime]
intra_op_threads = 1
[budget]
latency_ms = 1000.0
min_speedup = 1.0
percentile = 90
warmup_runs = 2
min_iterations = 10
min_seconds = 0.0
[gates]
min_top1 = 0.0
max_top1_drop = 1.0
[export]
opset = 18
"""


def _tree_pss_kb(pid: int) -> int:
    """Summed PSS (kB) of ``pid`` and its descendants (shared pages counted once overall)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except (OSError, StopIteration):
            continue
    return total


def _vm_hwm_kb(pid: int) -> int:
    """The process's resident high-water mark (kB) since its exec; 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def run_once(data: Path, teacher: Path, profile: Path, out: Path, storage: str) -> dict:
    cmd = [
        sys.executable, "-m", "compressor", "run", "--teacher", str(teacher),
        "--data", str(data), "--profile", str(profile), "--out", str(out), "--overwrite",
        "--family", "torchvision_mix", "--candidates", STUDENT, "--epochs", "1",
        "--batch-size", "64", "--no-data-cache", "--no-augment",
        "--device", "cpu", f"--data-{storage}", "--json",
    ]  # fmt: skip
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak_pss, hwm = [0], [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak_pss[0] = max(peak_pss[0], _tree_pss_kb(proc.pid))
            hwm[0] = max(hwm[0], _vm_hwm_kb(proc.pid))
            time.sleep(0.25)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    stdout = proc.stdout.read() if proc.stdout else b""
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, _usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    watcher.join()
    wall = time.perf_counter() - began
    if proc.returncode not in (0, 1):
        raise SystemExit(f"run failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    epoch = report["distillation"]["history"][0]
    return {
        "storage": storage,
        "exit_code": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_main_mb": round(hwm[0] / 1024),
        "peak_pss_tree_mb": round(peak_pss[0] / 1024),
        "epoch_images_per_s": round(epoch["samples"] / epoch["seconds"], 1),
        "epoch_s": round(epoch["seconds"], 1),
        "data": {k: report["data"].get(k) for k in ("train", "val", "test", "storage")},
        "student_top1": report["accuracy"]["student_top1"],
        "stdout_tail": stdout.decode()[-300:] if proc.returncode else "",
    }


def data_path_throughput(data: Path) -> dict:
    """Images/s of one shuffled pass over train, 128 per batch, for each storage."""
    from compressor.data.splits import load_image_folder
    from compressor.data.streaming import default_workers

    out: dict = {"workers": default_workers()}
    began = time.perf_counter()
    memory = load_image_folder(data, SHAPE, seed=0, storage="memory")
    out["memory_decode_s"] = round(time.perf_counter() - began, 2)
    streamed = load_image_folder(data, SHAPE, seed=0, storage="stream")
    for name, split in (("memory", memory.train), ("stream", streamed.train)):
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
        began = time.perf_counter()
        n = sum(len(b) for b in split.iter_batches(order, 128))
        out[f"{name}_pass_images_per_s"] = round(n / (time.perf_counter() - began), 1)
    out["memory_first_epoch_images_per_s"] = round(
        len(memory.train) / (out["memory_decode_s"] + len(memory.train)
                             / out["memory_pass_images_per_s"]), 1
    )  # fmt: skip
    return out


def decoder_comparison(data: Path, count: int = 300) -> dict:
    """ms per image: PIL decode + eval transform vs torchvision.io.decode_jpeg + v2 resize/crop."""
    import torchvision
    from torchvision.transforms.v2 import functional as F

    from compressor.data.splits import default_preprocess

    files = sorted((data / "train").rglob("*.jpg"))[:count]
    spec = default_preprocess(SHAPE)
    began = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            spec.apply(im)
    pil = (time.perf_counter() - began) / len(files) * 1e3
    began = time.perf_counter()
    for f in files:
        img = torchvision.io.decode_jpeg(torchvision.io.read_file(str(f)))
        img = F.resize(img, [spec.resolved_resize], antialias=True)
        F.center_crop(img, list(spec.size))
    tv = (time.perf_counter() - began) / len(files) * 1e3
    return {"images": len(files), "pil_ms": round(pil, 3), "torchvision_io_ms": round(tv, 3)}


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return next(line.split(":", 1)[1].strip() for line in text.splitlines()
                    if line.startswith("model name"))  # fmt: skip
    except (OSError, StopIteration):
        return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/streaming-bench"))
    parser.add_argument("--cifar", type=Path, default=Path("/work/shared/datasets/cifar10"))
    parser.add_argument("--sizes", default="2000,20000")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from compressor.data.streaming import available_memory_bytes, choose_storage

    args.work.mkdir(parents=True, exist_ok=True)
    profile = args.work / "bench-224.toml"
    profile.write_text(PROFILE)
    sizes = [int(s) for s in args.sizes.split(",")]
    folders = {n: build_folder(args.cifar, args.work / f"photos{n}", n) for n in sizes}
    teacher = args.work / "teacher.pt"
    train_teacher(folders[min(sizes)], teacher)
    results: dict = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
        "available_memory_gb": round(available_memory_bytes() / 1e9, 1), "runs": [],
    }  # fmt: skip
    results["decoders"] = decoder_comparison(folders[min(sizes)])
    for n, folder in folders.items():
        auto = choose_storage("auto", n, SHAPE)
        row = {"images": n, "auto_choice": auto.mode, "auto_reason": auto.reason}
        row["data_path"] = data_path_throughput(folder)
        for storage in ("stream", "in-memory"):
            row[storage] = run_once(folder, teacher, profile, args.work / f"run{n}-{storage}",
                                    storage)  # fmt: skip
            print(json.dumps({n: {storage: row[storage]}}), flush=True)
        results["runs"].append(row)
        (args.work / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))


def table(results: dict) -> str:
    lines = [
        f"CPU: {results['cpu']} ({results['cores']} cores), torch {results['torch']}, "
        f"{results['available_memory_gb']} GB available",
        "",
        "| images | storage | peak RSS main (MB) | peak PSS tree (MB) | epoch images/s | wall (s) "
        "| data-path images/s | auto picks |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in results["runs"]:
        for storage, key in (("in-memory", "memory"), ("stream", "stream")):
            r = row[storage]
            lines.append(
                f"| {row['images']} | {storage} | {r['peak_rss_main_mb']} | "
                f"{r['peak_pss_tree_mb']} | {r['epoch_images_per_s']} | {r['wall_s']} | "
                f"{row['data_path'][f'{key}_pass_images_per_s']} | {row['auto_choice']} |"
            )
    if len(results["runs"]) >= 2:
        small, large = results["runs"][0], results["runs"][-1]
        for storage in ("stream", "in-memory"):
            growth = large[storage]["peak_rss_main_mb"] / small[storage]["peak_rss_main_mb"]
            pss = large[storage]["peak_pss_tree_mb"] / small[storage]["peak_pss_tree_mb"]
            lines.append(f"\n{storage}: peak RSS x{growth:.2f}, peak tree PSS x{pss:.2f} "
                         f"from {small['images']} to {large['images']} images")  # fmt: skip
    d = results["decoders"]
    lines.append(f"\ndecode + eval transform, {d['images']} JPEGs 256x192: PIL {d['pil_ms']} "
                 f"ms/image, torchvision.io {d['torchvision_io_ms']} ms/image")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
