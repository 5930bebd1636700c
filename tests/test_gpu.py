"""CUDA-only checks of the fast path (deselected by default; run with ``pytest -m gpu``).

These need a GPU, which the development machine of this project does not have: they are the
first thing to run where one is available (``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import pytest
import torch

from compressor import distill as distill_module
from compressor.distill import TrainConfig, distill
from compressor.losses import LossConfig
from compressor.students import build_model
from compressor.teacher import load_teacher

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
MEAN, STD = (0.5,), (0.5,)


def _distill(digits_splits, teacher_path, **train):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=4, batch_size=128, lr=0.05, device="cuda", **train)
    return distill(
        load_teacher(teacher_path).model, build_model("cifar_resnet8_w8", 10, 1),
        digits_splits, MEAN, STD, LossConfig(), cfg,
    )  # fmt: skip


def test_auto_precision_on_cuda_trains(digits_splits, teacher_path) -> None:
    result = _distill(digits_splits, teacher_path)
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert result.device.startswith("cuda") and result.step["precision"] == expected
    assert result.step["channels_last"] and result.step["teacher_batchnorm_folded"]
    assert result.best_val_top1 > 0.5


def test_fp16_with_loss_scaling_on_cuda(digits_splits, teacher_path) -> None:
    result = _distill(digits_splits, teacher_path, precision="fp16")
    assert result.step["precision"] == "fp16" and result.best_val_top1 > 0.5


@pytest.mark.parametrize("augment", [True, False])
def test_training_epoch_never_waits_for_the_gpu(
    digits_splits, teacher_path, monkeypatch: pytest.MonkeyPatch, augment: bool
) -> None:
    """Any synchronising call (.item(), nonzero, a blocking copy) inside an epoch raises."""
    real = distill_module._train_epoch

    def strict(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return real(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    monkeypatch.setattr(distill_module, "_train_epoch", strict)
    result = _distill(digits_splits, teacher_path, precision="bf16", augment=augment)
    assert len(result.history) == 4
