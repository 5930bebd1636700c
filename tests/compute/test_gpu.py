"""CUDA-only checks of the fast path (deselected by default; run with ``pytest -m gpu``).

These need a GPU, which the development machine of this project does not have: they are the
first thing to run where one is available (``benchmarks/gpu_check.sh``). The digits are built
from scikit-learn as in conftest (the GPU machine has it); ``COMPRESSOR_TEST_DIGITS`` may name
a prepared folder instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from compressor.compute import speed as accel
from compressor.compute.inference import DeviceImages, predict_logits, predict_sharded
from compressor.losses.total import LossConfig
from compressor.models.checkpoint import load_bundle
from compressor.models.registry import build_model
from compressor.train import loop as distill_module
from compressor.train.loop import TrainConfig, distill

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
MEAN, STD = (0.5,), (0.5,)
CUDA = torch.device("cuda")


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packed digits when given (gpu_check.sh), else built as in conftest."""
    packed = os.environ.get("COMPRESSOR_TEST_DIGITS")
    if packed:
        return Path(packed)
    from compressor.pipeline.demo import build_digits_imagefolder

    return build_digits_imagefolder(tmp_path_factory.mktemp("digits") / "data")


def _distill(digits_splits, teacher_path, on_epoch=None, teacher=None, **train):
    """Eager unless ``compile`` is given: inductor's first compile takes a minute."""
    torch.manual_seed(0)
    train.setdefault("compile", False)
    cfg = TrainConfig(epochs=4, batch_size=128, lr=0.05, device="cuda", **train)
    return distill(
        teacher if teacher is not None else load_bundle(teacher_path).model,
        build_model("cifar_resnet8_w8", 10, 1),
        digits_splits, MEAN, STD, LossConfig(), cfg, on_epoch=on_epoch,
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
    real = distill_module.train_epoch

    def strict(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return real(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    monkeypatch.setattr(distill_module, "train_epoch", strict)
    result = _distill(digits_splits, teacher_path, precision="bf16", augment=augment)
    assert len(result.history) == 4


def test_teacher_is_cast_once_and_cudnn_autotunes(
    digits_splits, teacher_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B10: the folded teacher holds bf16 weights (autocast does not re-cast them per step);
    cuDNN autotunes during training and the flag is restored afterwards (#24)."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    during = []
    result = _distill(
        digits_splits, teacher_path, precision="bf16",
        on_epoch=lambda row: during.append(torch.backends.cudnn.benchmark),
    )  # fmt: skip
    assert result.step["teacher_dtype"] == "bfloat16" and result.step["teacher_batchnorm_folded"]
    assert during == [True] * 4 and torch.backends.cudnn.benchmark is False


def test_callers_teacher_stays_fp32_on_cpu_after_bf16_training(digits_splits, teacher_path) -> None:
    """#24 item 1 on CUDA: the cast is a copy, so verification can run the teacher after."""
    bundled = load_bundle(teacher_path).model.eval()
    no_bn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.GroupNorm(1, 8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10),
    ).eval()  # fmt: skip
    for teacher in (torch.jit.script(bundled), no_bn):
        result = _distill(digits_splits, teacher_path, teacher=teacher, precision="bf16")
        assert {p.dtype for p in teacher.parameters()} == {torch.float32}
        logits = predict_logits(teacher.cpu(), digits_splits.val, MEAN, STD, torch.device("cpu"))
        assert logits.dtype == torch.float32 and len(result.history) == 4


def test_auto_compile_captures_cuda_graphs_with_the_eager_losses(
    digits_splits, teacher_path
) -> None:
    """#24 item 3: by default the CUDA step is compiled with CUDA graphs (static shapes)."""
    import dataclasses

    from compressor.data.splits import Split

    full = (len(digits_splits.train) // 128) * 128  # full batches: both runs see every image
    train = Split(digits_splits.train.images[:full], digits_splits.train.labels[:full])
    splits = dataclasses.replace(digits_splits, train=train)
    eager = _distill(splits, teacher_path, precision="bf16", compile=False)
    graphs = _distill(splits, teacher_path, precision="bf16", compile=None)
    assert graphs.step["compile_mode"] == "reduce-overhead" and graphs.step["eager_reason"] is None
    assert [r["loss"] for r in graphs.history] == pytest.approx(
        [r["loss"] for r in eager.history], rel=0.02
    )


def test_deterministic_runs_repeat_and_restore_the_flags(digits_splits, teacher_path) -> None:
    runs = [_distill(digits_splits, teacher_path, deterministic=True) for _ in range(2)]
    assert runs[0].step["deterministic"] is True
    assert [r["loss"] for r in runs[0].history] == [r["loss"] for r in runs[1].history]
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic


def test_batchnorm_folding_is_accepted_with_tf32_on(
    teacher_path, digits_splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B9: the folding check runs in exact fp32 even where TF32 is the default."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = matmul.allow_tf32 = True
    try:
        teacher = load_bundle(teacher_path).model.to(CUDA).eval()
        x = (digits_splits.train.images[:64].to(CUDA).float() / 255 - 0.5) / 0.5
        _folded, ok = accel.fold_batchnorm(teacher, x)
        assert ok
        assert cudnn.allow_tf32 and matmul.allow_tf32  # restored
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_sharded_bf16_prediction_agrees_with_fp32(teacher_path, digits_splits) -> None:
    """B7: validation under the training precision, from device-resident images."""
    teacher = load_bundle(teacher_path).model.to(CUDA).eval()
    images = DeviceImages(digits_splits.val, CUDA)
    assert images.resident is not None and images.resident.is_cuda
    fp32 = predict_logits(teacher, digits_splits.val, MEAN, STD, CUDA)
    bf16 = predict_sharded(
        teacher, images, logits=True, mean=MEAN, std=STD, classes=10, batch_size=512,
        channels_last=True, precision="bf16",
    )  # fmt: skip
    agree = (fp32.argmax(1) == bf16.argmax(1)).float().mean()
    assert agree > 0.95 and torch.allclose(bf16, fp32, atol=0.1 * float(fp32.abs().max()))


def test_compiled_step_compiles_once_on_cuda(
    digits_splits, teacher_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B6: full batches only, static shapes: no recompilation after the first step."""
    import torch._dynamo

    monkeypatch.setattr(accel, "COMPILE_BACKEND", "eager")  # inductor would take a minute
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    torch._dynamo.reset()
    result = _distill(digits_splits, teacher_path, compile=True)
    assert result.step["compiled"] and len(result.history) == 4
