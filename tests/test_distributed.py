"""DistributedDataParallel through torchrun: 2 CPU processes with the gloo backend."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from compressor.distributed import shard
from tests.conftest import write_profile


def test_shards_are_disjoint_equal_and_cover_the_epoch() -> None:
    order = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    parts = [shard(order, rank, 4) for rank in range(4)]
    assert {len(p) for p in parts} == {25}
    flat = torch.cat(parts)
    assert len(set(flat.tolist())) == 100 and set(flat.tolist()) <= set(order.tolist())


def _run(teacher: Path, data: Path, profile: Path, out: Path, nproc: int) -> dict:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}", "-m", "compressor"] if nproc > 1 else [
                sys.executable, "-m", "compressor"]  # fmt: skip
    cmd = [*launcher, "run", "--teacher", str(teacher), "--data", str(data), "--profile",
           str(profile), "--out", str(out), "--epochs", "6", "--batch-size", "64",
           "--no-hflip", "--candidates", "cifar_resnet8_w16", "--device", "cpu",
           "--quiet"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


def test_two_process_gloo_run_matches_single_process(
    teacher_path: Path, digits_root: Path, tmp_path: Path
) -> None:
    profile = write_profile(tmp_path / "p.toml")
    ddp = _run(teacher_path, digits_root, profile, tmp_path / "ddp", nproc=2)
    single = _run(teacher_path, digits_root, profile, tmp_path / "single", nproc=1)
    assert ddp["distillation"]["world_size"] == 2 and single["distillation"]["world_size"] == 1
    # every epoch saw the whole training split, summed over the two ranks
    train = ddp["data"]["train"]
    assert all(row["samples"] == (train // 2) * 2 for row in ddp["distillation"]["history"])
    assert len(ddp["distillation"]["history"]) == 6
    ddp_top1, single_top1 = ddp["accuracy"]["student_top1"], single["accuracy"]["student_top1"]
    assert ddp_top1 > 0.5 and single_top1 > 0.5, (ddp_top1, single_top1)
    assert abs(ddp_top1 - single_top1) < 0.1, (ddp_top1, single_top1)
    assert train == single["data"]["train"]
    # only rank 0 wrote artifacts: one report, no stray temp files
    assert not list((tmp_path / "ddp").glob(".*.tmp"))
