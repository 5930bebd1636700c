"""Distributed training: device/backend choice per rank (mocked GPUs), failures on rank 0,
per-rank seeding and resume, and real 2-process gloo runs of ``run`` and ``distill``.

Multi-process tests start their processes with a timeout, so a hang fails in seconds to
minutes instead of blocking the suite.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from compressor.compute import distributed
from compressor.compute.inference import (
    DeviceImages,
    predict_logits,
    predict_sharded,
    resolve_device,
)
from compressor.errors import CompressorError
from compressor.losses.total import LossConfig
from compressor.models.checkpoint import load_bundle
from compressor.models.registry import build_model
from compressor.train.loop import TrainConfig, distill
from compressor.train.step import augment_seed, lr_factor
from tests.conftest import write_profile

ROOT = Path(__file__).resolve().parents[2]
MEAN, STD = (0.5,), (0.5,)
LAUNCH_TIMEOUT_S = 240  # a hung process group fails the test after this


def test_shards_are_disjoint_equal_and_cover_the_epoch() -> None:
    order = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    parts = [shard(order, rank, 4) for rank in range(4)]
    assert {len(p) for p in parts} == {25}
    flat = torch.cat(parts)
    assert len(set(flat.tolist())) == 100 and set(flat.tolist()) <= set(order.tolist())
    spans = [distributed.span(10, r, 3) for r in range(3)]
    assert [list(s) for s in spans] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert list(distributed.span(1, 1, 2)) == []  # more ranks than rows: empty blocks


shard = distributed.shard


# --- B1/B2: device and backend per rank, with torchrun's environment and mocked GPUs ---------


def _torchrun_env(monkeypatch: pytest.MonkeyPatch, local_rank: int, local_world: int) -> None:
    monkeypatch.setenv("WORLD_SIZE", str(local_world))
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))


def _gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize(
    ("requested", "gpus", "local_world", "device", "backend"),
    [
        ("cpu", 8, 2, "cpu", "gloo"),  # --device cpu on a GPU host: no NCCL
        ("auto", 0, 2, "cpu", "gloo"),
        ("auto", 2, 2, "cuda:1", "cpu:gloo,cuda:nccl"),  # one GPU per rank
        ("cuda", 4, 2, "cuda:1", "cpu:gloo,cuda:nccl"),
        ("cuda", 1, 2, "cuda:0", "gloo"),  # more ranks than GPUs: shared, NCCL cannot
        ("auto", 2, 3, "cuda:1", "gloo"),
        ("cuda:2", 4, 2, "cuda:3", "cpu:gloo,cuda:nccl"),  # cuda:N = GPUs N.. for this job
    ],
)
def test_rank_device_and_backend_follow_the_requested_device(
    monkeypatch: pytest.MonkeyPatch,
    requested: str,
    gpus: int,
    local_world: int,
    device: str,
    backend: str,
) -> None:
    _torchrun_env(monkeypatch, local_rank=1, local_world=local_world)
    _gpus(monkeypatch, gpus)
    plan = distributed.plan_rank(requested)
    assert (str(plan.device), plan.backend) == (device, backend)
    assert resolve_device(requested) == torch.device(device)


def test_resolve_device_single_process_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "3")  # ignored without WORLD_SIZE > 1
    _gpus(monkeypatch, 4)
    assert resolve_device("cuda:2") == torch.device("cuda:2")
    assert resolve_device("auto") == torch.device("cuda:0")
    with pytest.raises(CompressorError, match="needs GPU 4 but 4 GPU"):
        resolve_device("cuda:4")
    _torchrun_env(monkeypatch, local_rank=1, local_world=2)
    with pytest.raises(CompressorError, match="with 2 local ranks needs GPU 4"):
        resolve_device("cuda:3")  # local rank 1 would need GPU 3 + 1
    _gpus(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(CompressorError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(CompressorError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.parametrize(
    ("requested", "gpus", "set_device", "backend"),
    [
        ("cpu", 2, None, "gloo"),
        ("auto", 2, "cuda:1", "cpu:gloo,cuda:nccl"),
        ("auto", 1, "cuda:0", "gloo"),
    ],
)
def test_init_distributed_binds_only_cuda_ranks_with_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
    requested: str,
    gpus: int,
    set_device: str | None,
    backend: str,
) -> None:
    _torchrun_env(monkeypatch, local_rank=1, local_world=2)
    _gpus(monkeypatch, gpus)
    monkeypatch.setenv("COMPRESSOR_DIST_TIMEOUT", "90")
    monkeypatch.delenv("COMPRESSOR_DIST_WAIT_TIMEOUT", raising=False)
    calls: dict[str, object] = {}
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("set_device", d))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.setdefault("init", kw))
    monkeypatch.setattr(dist, "new_group", lambda **kw: calls.setdefault("group", kw) and "g")
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed, "_wait_group", None)
    got = distributed.init_distributed(requested)
    assert got == distributed.DistInfo(rank=1, world_size=2, local_rank=1)
    set_to = calls.get("set_device")
    assert (str(set_to) if set_to is not None else None) == set_device
    assert calls["init"] == {"backend": backend, "timeout": datetime.timedelta(seconds=90)}
    assert calls["group"] == {"backend": "gloo", "timeout": datetime.timedelta(seconds=7200)}


def test_not_distributed_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_distributed("cuda:7") == distributed.DistInfo()


# --- B5/B7/B8 pieces that need no second process ----------------------------------------------


def test_lr_schedule_is_unchanged_on_one_process_and_warms_up_on_several() -> None:
    total = 100
    for step in (0, 1, 50, 99, 100, 150):
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        assert lr_factor(step, total, 0, 1) == cosine  # bit-identical to the former lambda
    assert lr_factor(0, total, 5, 4) == pytest.approx(0.25)  # starts at lr = peak / world
    assert lr_factor(5, total, 5, 4) == lr_factor(5, total, 0, 1)  # then plain cosine
    ramp = [lr_factor(s, total, 5, 4) for s in range(6)]
    assert ramp == sorted(ramp)


def test_augment_seed_differs_per_rank_and_epoch_and_is_stable() -> None:
    seeds = {augment_seed(0, r, e) for r in range(4) for e in range(50)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert augment_seed(3, 1, 7) == augment_seed(3, 1, 7) != augment_seed(4, 1, 7)


def test_sharded_prediction_equals_plain_prediction_on_one_process(digits_splits) -> None:
    torch.manual_seed(0)
    model = build_model("cifar_resnet8_w8", 10, 1).eval()
    images = DeviceImages(digits_splits.val, torch.device("cpu"))
    want = predict_logits(model, digits_splits.val, MEAN, STD, torch.device("cpu"), 32)
    settings = dict(mean=MEAN, std=STD, classes=10, batch_size=32, channels_last=True,
                    precision="fp32")  # fmt: skip
    got = predict_sharded(model, images, logits=True, **settings)
    assert torch.equal(got, want)
    predicted = predict_sharded(model, images, logits=False, **settings)
    assert predicted.dtype == torch.long and torch.equal(predicted, want.argmax(1))


def test_resume_with_another_world_size_is_refused(
    digits_splits, teacher_path: Path, tmp_path: Path
) -> None:
    teacher = load_bundle(teacher_path).model
    ckpt = tmp_path / "state.pt"
    cfg = TrainConfig(epochs=2, batch_size=128, device="cpu")

    def train(**kwargs):
        torch.manual_seed(0)
        student = build_model("cifar_resnet8_w8", 10, 1)
        return distill(teacher, student, digits_splits, MEAN, STD, LossConfig(), cfg, **kwargs)

    class Stop(Exception):
        pass

    def stop(row):
        raise Stop

    with pytest.raises(Stop):
        train(checkpoint=ckpt, on_epoch=stop)
    state = torch.load(ckpt, weights_only=True)
    assert state["world_size"] == 1 and "augment_rng" not in state
    state["world_size"] = 2
    torch.save(state, ckpt)
    with pytest.raises(CompressorError, match=r"trained by 2 process\(es\) and this run has 1"):
        train(checkpoint=ckpt, resume=True)


# --- multi-process: plain processes with torchrun's variables (no torchrun agent) -------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(script: str, nproc: int = 2, *args: str, **env: str) -> list[tuple[int, str, str]]:
    """Run ``script`` in ``nproc`` processes forming one gloo group; (rc, stdout, stderr) each.

    Not through torchrun on purpose: its agent kills the other workers when one fails, which
    would hide a rank that hangs after rank 0 failed.
    """
    port = str(_free_port())
    procs = []
    for rank in range(nproc):
        penv = {
            **os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
            "WORLD_SIZE": str(nproc), "RANK": str(rank), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(nproc), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            **env,
        }  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(script), *args],
                cwd=ROOT,
                env=penv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=LAUNCH_TIMEOUT_S)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


ON_MAIN = """
import sys
from compressor.compute import distributed
from compressor.errors import CompressorError
from compressor.pipeline.runner import _on_main

distributed.init_distributed("cpu")

def work(kind):
    if distributed.info().rank != 0:
        raise AssertionError("ran on a rank other than 0")
    if kind == "bug":
        raise ValueError("boom")
    if kind == "user":
        raise CompressorError("bad input")
    return {"chosen": "net"}

try:
    for kind in sys.argv[1:]:  # one process group, one call per kind: each must return
        try:
            print("RESULT", _on_main(lambda: work(kind)), flush=True)
        except BaseException as exc:
            print("RAISED", type(exc).__name__, exc, flush=True)
finally:
    distributed.shutdown()
"""


def test_rank0_failure_reaches_every_rank_without_a_hang() -> None:
    """A result, a bug and a user error on rank 0, in turn in one process group (one launch):
    every rank gets each outcome, and the group is still usable after a forwarded failure."""
    # Collective timeouts far beyond the launch timeout: only forwarding can end rank 1's wait.
    env = {"COMPRESSOR_DIST_TIMEOUT": "3600", "COMPRESSOR_DIST_WAIT_TIMEOUT": "3600"}
    (rc0, out0, err0), (rc1, out1, err1) = _launch(ON_MAIN, 2, "ok", "bug", "user", "ok", **env)
    ok, user = "RESULT {'chosen': 'net'}", "RAISED CompressorError bad input"
    bug = {0: "RAISED ValueError boom", 1: "RAISED RankZeroFailure rank 0 failed: ValueError: boom"}
    for rank, out, err in ((0, out0, err0), (1, out1, err1)):
        assert out.splitlines() == [ok, bug[rank], user, ok], err[-2000:]
    assert (rc0, rc1) == (0, 0)


DISTILL = """
import sys
import torch
from compressor.compute import distributed
from compressor.data.splits import load_image_folder
from compressor.train.loop import TrainConfig, distill
from compressor.losses.total import LossConfig
from compressor.models.registry import build_model
from compressor.models.checkpoint import load_bundle

data_root, teacher_path, *jobs = sys.argv[1:]  # jobs: ckpt,out,mode (one launch, several runs)
info = distributed.init_distributed("cpu")
data = load_image_folder(data_root, (1, 8, 8), seed=0)
teacher = load_bundle(teacher_path).model

class Stop(Exception):
    pass

cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, device="cpu")
try:
    for job in jobs:
        ckpt, out, mode = job.split(",")
        torch.manual_seed(0)
        student = build_model("cifar_resnet8_w8", 10, 1)

        def on_epoch(row, mode=mode):
            if mode == "stop" and row["epoch"] == 1:
                raise Stop

        try:
            result = distill(teacher, student, data, (0.5,), (0.5,), LossConfig(), cfg,
                             on_epoch=on_epoch, checkpoint=__import__("pathlib").Path(ckpt),
                             resume=mode == "resume")
            torch.save({"state": result.student.state_dict(), "history": result.history,
                        "step": result.step}, f"{out}.rank{info.rank}.pt")
        except Stop:
            pass
finally:
    distributed.shutdown()
"""


def test_two_process_resume_equals_uninterrupted_on_every_rank(
    small_digits_root: Path, teacher_path: Path, tmp_path: Path
) -> None:
    """Augmentation seeded per (seed, rank, epoch): resuming restores every rank's stream."""
    data = str(small_digits_root)  # equality of weights, whatever the data

    def launch(*jobs: tuple[str, str, str]) -> None:
        args = [f"{tmp_path / ckpt},{tmp_path / out},{mode}" for ckpt, out, mode in jobs]
        for rc, _out, err in _launch(DISTILL, 2, data, str(teacher_path), *args):
            assert rc == 0, err[-3000:]

    launch(("full.pt", "full", "full"), ("cut.pt", "cut", "stop"))  # one process group
    assert not (tmp_path / "cut.rank0.pt").exists()
    launch(("cut.pt", "resumed", "resume"))  # new processes resume from the checkpoint
    load = lambda name: torch.load(tmp_path / name, weights_only=True)  # noqa: E731
    full0, full1, resumed0, resumed1 = (
        load(n) for n in ("full.rank0.pt", "full.rank1.pt", "resumed.rank0.pt", "resumed.rank1.pt")
    )
    for other in (full1, resumed0, resumed1):
        for name, value in full0["state"].items():
            assert torch.equal(value, other["state"][name]), name
    # validation is sharded and summed: both ranks see the same accuracy, so the same best epoch
    assert [r["val_top1"] for r in full0["history"]] == [r["val_top1"] for r in full1["history"]]
    assert [r["val_top1"] for r in resumed0["history"]] == [r["val_top1"] for r in full0["history"]]
    step = full0["step"]
    assert (step["world_size"], step["batch_per_rank"], step["lr"]) == (2, 64, 0.1)


# --- the CLI under torchrun ------------------------------------------------------------------


def _cli(*args: str, nproc: int) -> subprocess.CompletedProcess[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}", "-m", "compressor"] if nproc > 1 else [
                sys.executable, "-m", "compressor"]  # fmt: skip
    result = subprocess.run(
        [*launcher, *args], capture_output=True, text=True, timeout=900, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _run(teacher: Path, data: Path, profile: Path, out: Path, nproc: int, *extra: str) -> dict:
    _cli("run", "--teacher", str(teacher), "--data", str(data), "--profile", str(profile),
         "--out", str(out), "--epochs", "6", "--batch-size", "64", "--no-hflip",
         "--candidates", "cifar_resnet8_w16", "--device", "cpu", "--quiet", *extra,
         nproc=nproc)  # fmt: skip
    return json.loads((out / "report.json").read_text())


def test_two_process_gloo_run_matches_single_process_and_distill_runs_distributed(
    teacher_path: Path, small_digits_root: Path, tmp_path: Path
) -> None:
    digits_root = small_digits_root  # 400 training images: the plumbing, at a third of the cost
    profile = write_profile(tmp_path / "p.toml")
    # the two-process run streams its images through DataLoader workers on every rank
    ddp = _run(teacher_path, digits_root, profile, tmp_path / "ddp", 2, "--data-stream")
    single = _run(teacher_path, digits_root, profile, tmp_path / "single", nproc=1)
    assert ddp["distillation"]["world_size"] == 2 and single["distillation"]["world_size"] == 1
    assert (ddp["data"]["storage"], single["data"]["storage"]) == ("stream", "memory")
    # every epoch saw the whole training split, summed over the two ranks
    train = ddp["data"]["train"]
    assert all(row["samples"] == (train // 2) * 2 for row in ddp["distillation"]["history"])
    assert len(ddp["distillation"]["history"]) == 6
    step = ddp["distillation"]["step"]  # batch per process, peak lr scaled by the world size
    assert (step["batch_per_rank"], step["world_size"]) == (64, 2)
    assert step["lr"] == pytest.approx(2 * ddp["distillation"]["train"]["lr"])
    ddp_top1, single_top1 = ddp["accuracy"]["student_top1"], single["accuracy"]["student_top1"]
    assert ddp_top1 > 0.5 and single_top1 > 0.5, (ddp_top1, single_top1)
    assert abs(ddp_top1 - single_top1) < 0.1, (ddp_top1, single_top1)
    assert train == single["data"]["train"]
    # only rank 0 wrote artifacts: one report, no stray temp files
    assert not list((tmp_path / "ddp").glob(".*.tmp"))

    # `compressor distill` under torchrun: both ranks train (on shards), rank 0 alone writes
    # and reports, and the artifacts downstream of the student are removed once.
    out = tmp_path / "single"
    result = _cli("distill", "--out", str(out), "--epochs", "2", "--quiet", nproc=2)
    assert result.stdout.count("distilled: best validation top-1") == 1, result.stdout
    distilled = json.loads((out / "distill.json").read_text())
    assert distilled["world_size"] == 2 and len(distilled["history"]) == 2
    assert all(row["samples"] == (train // 2) * 2 for row in distilled["history"])
    assert (out / "student.pt").is_file() and not (out / "report.json").exists()
    assert not list(out.glob(".*.tmp"))


# --- per-rank work that used to be repeated or copied on every rank (#24) --------------------

SHARED_WORK = """
import json, sys
import torch
from compressor.compute import distributed
from compressor.data.splits import Split
from compressor.train.loop import TrainConfig
from compressor.compute.inference import DeviceImages, predict_sharded
from compressor.models.registry import build_model
from compressor.train.setup import Placement, batchnorm_recalibration, place_models

distributed.init_distributed("cpu")
torch.manual_seed(0)
student = build_model("cifar_resnet8_w8", 10, 1)
gen = torch.Generator().manual_seed(1)
split = Split(torch.randint(0, 256, (90, 1, 8, 8), dtype=torch.uint8, generator=gen),
              torch.randint(0, 10, (90,), generator=gen))
images = DeviceImages(split, torch.device("cpu"))
cfg = TrainConfig(device="cpu", eval_batch_size=16, bn_recalibration_images=70, channels_last=False)
place = Placement.resolve(student, cfg, len(split))
seen = batchnorm_recalibration(student, images, (0.5,), (0.5,), cfg, place)()
stats = {k: v.tolist() for k, v in student.state_dict().items() if "running" in k}
logits = predict_sharded(student.eval(), images, logits=True, mean=(0.5,), std=(0.5,), classes=10,
                         batch_size=16, channels_last=False, precision="fp32")
report = {"seen": seen, "stats": stats, "logits": logits.tolist(),
          "file_backed": logits.untyped_storage().filename is not None}
if distributed.info().world_size > 1:
    import torch.nn as nn
    wrapped = place_models(None, build_model("cifar_resnet8_w8", 10, 1), None, (0.5,), (0.5,),
                           cfg, place).trained
    report["broadcast_buffers"] = wrapped.broadcast_buffers
print("REPORT", json.dumps(report), flush=True)
distributed.shutdown()
"""


def test_two_ranks_share_bn_recalibration_and_one_host_logit_cache() -> None:
    """BatchNorm recalibration is split over the ranks and gives the one-process statistics;
    the teacher-logit cache is one file-backed host tensor per machine, not one per rank; the
    DDP wrapper broadcasts no buffers per step (recalibration makes them agree)."""
    reports = []
    for nproc in (1, 2):
        results = _launch(SHARED_WORK, nproc)
        for rc, _out, err in results:
            assert rc == 0, err[-2000:]
        reports.append([json.loads(out.split("REPORT ", 1)[1]) for _, out, _ in results])
    [single], pair = reports
    for rank in pair:
        assert rank["seen"] == single["seen"] == 70
        for name, values in single["stats"].items():
            assert torch.allclose(torch.tensor(rank["stats"][name]), torch.tensor(values),
                                  rtol=1e-5, atol=1e-6), name  # fmt: skip
        assert torch.allclose(torch.tensor(rank["logits"]), torch.tensor(single["logits"]),
                              atol=1e-5)  # fmt: skip
        assert rank["file_backed"] and rank["broadcast_buffers"] is False
    assert not single["file_backed"]  # one process: a plain tensor
