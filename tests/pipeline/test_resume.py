"""Interruptions: atomic per-epoch checkpoints, resume after kill -9, determinism, NaN."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from compressor.cli.main import app
from compressor.errors import CompressorError
from compressor.losses.total import LossConfig
from compressor.models.checkpoint import load_bundle
from compressor.models.registry import build_model
from compressor.train.loop import TrainConfig, distill
from tests.conftest import write_profile

MEAN, STD = (0.5,), (0.5,)


def _train(digits_splits, teacher, epochs=2, **kwargs):
    torch.manual_seed(0)
    student = build_model("cifar_resnet8_w8", 10, 1)
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=0.05, hflip=True, device="cpu")
    return distill(teacher, student, digits_splits, MEAN, STD, LossConfig(), cfg, **kwargs)


def test_same_seed_same_weights_and_resume_matches_uninterrupted(
    small_digits_splits, teacher_path: Path, tmp_path: Path
) -> None:
    digits_splits = small_digits_splits  # equality of weights, whatever the data
    teacher = load_bundle(teacher_path).model
    full = _train(digits_splits, teacher)
    again = _train(digits_splits, teacher)
    for (name, a), b in zip(
        full.student.state_dict().items(), again.student.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name

    class Stop(Exception):
        pass

    def stop_after_one(row):
        if row["epoch"] == 1:
            raise Stop

    ckpt = tmp_path / "state.pt"
    with pytest.raises(Stop):
        _train(digits_splits, teacher, checkpoint=ckpt, on_epoch=stop_after_one)
    resumed = _train(digits_splits, teacher, checkpoint=ckpt, resume=True)
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 2
    for (name, a), b in zip(
        full.student.state_dict().items(), resumed.student.state_dict().values(), strict=False
    ):
        assert torch.equal(a, b), name


def test_nan_loss_stops_with_message_and_keeps_checkpoint(digits_splits, tmp_path: Path) -> None:
    class Exploding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(64, 10)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            out = self.lin(x.flatten(1))
            return out * float("nan") if self.calls > 12 else out

    ckpt = tmp_path / "state.pt"
    torch.manual_seed(0)
    with pytest.raises(CompressorError, match=r"NaN or infinite in epoch 2.*epoch 1"):
        distill(None, Exploding(), digits_splits, MEAN, STD, LossConfig(method="ce"),
                TrainConfig(epochs=3, batch_size=128, device="cpu"), checkpoint=ckpt)  # fmt: skip
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["student"].values())


def test_resume_after_kill_9(teacher_path: Path, small_digits_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    profile = write_profile(tmp_path / "p.toml")
    cmd = [sys.executable, "-m", "compressor", "run", "--teacher", str(teacher_path),
           "--data", str(small_digits_root), "--profile", str(profile), "--out", str(out),
           "--epochs", "10", "--batch-size", "32", "--candidates", "cifar_resnet8_w8",
           "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (out / "train_state.pt").exists():
            assert proc.poll() is None, "run ended before its first epoch finished"
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "student.pt").exists(), "killed too late: training had finished"
    selected_at = (out / "selection.json").stat().st_mtime_ns

    # The resume runs in this process (the killed run above was a real process): the CLI is
    # the same, and the interpreter start and the teacher's export are not paid again.
    result = CliRunner().invoke(app, ["run", "--resume", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["resumed"]["stages_skipped"] == ["select"]
    assert report["resumed"]["from_epoch"] >= 1
    assert len(report["distillation"]["history"]) == 10
    assert (out / "selection.json").stat().st_mtime_ns == selected_at
    assert not list(out.glob(".*.tmp"))


def test_resume_needs_a_run_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--resume", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "nothing to resume" in result.stderr


def test_teacher_logit_cache_matches_per_step_teacher(
    small_digits_splits, teacher_path: Path
) -> None:
    """Without augmentation, caching the teacher's logits must not change training."""
    digits_splits = small_digits_splits  # equality of weights, whatever the data
    teacher = load_bundle(teacher_path).model
    results = []
    for cache in (True, False):
        torch.manual_seed(0)
        cfg = TrainConfig(
            epochs=2, batch_size=128, augment=False, cache_teacher=cache, device="cpu"
        )
        student = build_model("cifar_resnet8_w8", 10, 1)
        results.append(distill(teacher, student, digits_splits, MEAN, STD, LossConfig(), cfg))
    cached, live = results
    assert (
        cached.history[-1]["teacher_wrong_fraction"] == live.history[-1]["teacher_wrong_fraction"]
    )
    for a, b in zip(
        cached.student.state_dict().values(), live.student.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
