"""Speed settings: precision choice, fp16 loss scaling, batch-norm folding, torch.compile."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from compressor.compute import speed as accel
from compressor.errors import CompressorError
from compressor.losses.total import LossConfig
from compressor.models.checkpoint import load_bundle
from compressor.models.registry import build_model
from compressor.train.loop import TrainConfig, distill

MEAN, STD = (0.5,), (0.5,)
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_precision_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert accel.resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert accel.resolve_precision("auto", CUDA) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert accel.resolve_precision("auto", CUDA) == "fp16"  # e.g. a T4 or V100
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    with pytest.raises(CompressorError, match="V100 does not support it"):
        accel.resolve_precision("bf16", CUDA)
    assert accel.resolve_precision("fp16", CPU) == "fp16"
    with pytest.raises(CompressorError, match="unknown precision 'fp8'"):
        accel.resolve_precision("fp8", CPU)
    with pytest.raises(CompressorError, match="unknown precision"):
        TrainConfig(precision="half")


def test_grad_scaler_only_for_fp16() -> None:
    assert accel.grad_scaler(CPU, "fp16").is_enabled()
    assert not accel.grad_scaler(CPU, "bf16").is_enabled()
    assert not accel.grad_scaler(CPU, "fp32").is_enabled()


def _images(n: int = 32) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _trained_bn_model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("cifar_resnet8_w8", 10, 1)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # move running statistics away from their init
            model(_images() * 3 + 1)
    return model.eval()


def _batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_folding_removes_batchnorm_and_keeps_the_logits() -> None:
    model = _trained_bn_model()
    x = _images()
    folded, ok = accel.fold_batchnorm(model, x)
    assert ok and _batchnorms(model) > 0 and _batchnorms(folded) == 0
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in folded.parameters())
    assert _batchnorms(model) > 0  # the caller's module is untouched


def test_folding_falls_back_when_it_cannot_trace_or_does_not_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Branchy(nn.Module):  # data-dependent control flow: FX cannot trace it
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn(self.conv(x))
            return y if y.sum() > 0 else -y

    x = _images()
    branchy = Branchy().eval()
    assert accel.fold_batchnorm(branchy, x) == (branchy, False)
    scripted = torch.jit.trace(_trained_bn_model(), x)
    assert accel.fold_batchnorm(scripted, x) == (scripted, False)

    import torch.fx.experimental.optimization as fx_opt

    def wrong_fuse(model: nn.Module) -> nn.Module:  # a folding bug must not reach training
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        return model

    monkeypatch.setattr(fx_opt, "fuse", wrong_fuse)
    model = _trained_bn_model()
    assert accel.fold_batchnorm(model, x) == (model, False)


def _distill(digits_splits, teacher, tmp_path=None, **train):
    torch.manual_seed(0)
    student = build_model("cifar_resnet8_w8", 10, 1)
    cfg = TrainConfig(epochs=4, batch_size=128, lr=0.05, device="cpu", **train)
    checkpoint = tmp_path / "state.pt" if tmp_path else None
    loss = LossConfig(bias_aware=True)  # the loss these floors were set with (default until #15)
    return distill(teacher, student, digits_splits, MEAN, STD, loss, cfg, checkpoint=checkpoint)


def test_fp16_with_loss_scaling_trains_and_checkpoints_the_scaler(
    digits_splits, teacher_path, tmp_path
) -> None:
    teacher = load_bundle(teacher_path).model
    fp32 = _distill(digits_splits, teacher)
    result = _distill(digits_splits, teacher, tmp_path, precision="fp16")
    assert fp32.step["precision"] == "fp32" and result.step["precision"] == "fp16"
    assert result.step["teacher_batchnorm_folded"] is True
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    # It learned, in half precision, on real digits, about as well as fp32 (0.67 vs 0.68 seen).
    assert result.best_val_top1 > 0.5
    assert result.best_val_top1 >= fp32.best_val_top1 - 0.05
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0


def test_compile_trains_the_same_weights_names(
    digits_splits, teacher_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accel, "COMPILE_BACKEND", "eager")  # dynamo tracing without C++ codegen
    teacher = load_bundle(teacher_path).model
    result = _distill(digits_splits, teacher, compile=True)
    assert result.step["compiled"] is True
    reference = build_model("cifar_resnet8_w8", 10, 1).state_dict()
    assert list(result.student.state_dict()) == list(reference)  # no "_orig_mod." prefixes
    assert result.best_val_top1 > 0.5


def test_compile_failure_is_one_clear_line(
    digits_splits, teacher_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_backend(graph, example_inputs):  # what a machine without a C++ compiler gives
        raise RuntimeError("no working C++ compiler found")

    monkeypatch.setattr(accel, "COMPILE_BACKEND", broken_backend)
    teacher = load_bundle(teacher_path).model
    with pytest.raises(
        CompressorError,
        match=r"--compile failed: no working C\+\+ compiler found; run without --compile",
    ):
        _distill(digits_splits, teacher, compile=True)


@pytest.mark.slow
def test_compile_with_inductor_on_cpu(digits_splits, teacher_path) -> None:
    teacher = load_bundle(teacher_path).model
    result = _distill(digits_splits, teacher, compile=True)
    assert result.step["compiled"] and result.best_val_top1 > 0.5


def test_inference_batch_follows_the_device_and_does_not_change_logits(digits_splits) -> None:
    from compressor.compute.inference import inference_batch_size, predict_logits

    assert (inference_batch_size(CPU), inference_batch_size(CUDA)) == (128, 512)
    with pytest.raises(CompressorError, match="eval_batch_size"):
        TrainConfig(eval_batch_size=0)
    model = _trained_bn_model()
    images = digits_splits.val.images
    auto = predict_logits(model, images, MEAN, STD, CPU)
    torch.testing.assert_close(predict_logits(model, images, MEAN, STD, CPU, 7), auto)


def test_channels_last_can_be_turned_off(digits_splits, teacher_path) -> None:
    teacher = load_bundle(teacher_path).model
    result = _distill(digits_splits, teacher, channels_last=False)
    assert result.step["channels_last"] is False and result.best_val_top1 > 0.5
    assert accel.resolve_channels_last(None, CPU) and accel.resolve_channels_last(None, CUDA)
    assert not accel.resolve_channels_last(False, CUDA)


def test_batchnorm_folding_check_runs_without_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Ampere/Hopper TF32 (on by default for cuDNN) is as coarse as the check's tolerance."""
    import torch.fx.experimental.optimization as fx_opt

    seen = []
    real_fuse = fx_opt.fuse

    def spying_fuse(model: nn.Module) -> nn.Module:
        folded = real_fuse(model)

        class Spy(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = folded

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                seen.append(
                    (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
                )
                return self.inner(x)

        return Spy()

    monkeypatch.setattr(fx_opt, "fuse", spying_fuse)
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)  # not monkeypatch: matmul has no __dict__ slot
    cudnn.allow_tf32 = matmul.allow_tf32 = True
    try:
        _folded, ok = accel.fold_batchnorm(_trained_bn_model(), _images())
        assert ok and seen == [(False, False)]
        assert cudnn.allow_tf32 and matmul.allow_tf32  # restored
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_teacher_cast_once_only_on_cuda_without_batchnorm(monkeypatch: pytest.MonkeyPatch) -> None:
    folded, _ = accel.fold_batchnorm(_trained_bn_model(), _images())
    assert accel.teacher_dtype(folded, CUDA, "bf16") == torch.bfloat16
    assert accel.teacher_dtype(folded, CUDA, "fp16") == torch.float16
    assert accel.teacher_dtype(folded, CUDA, "fp32") is None
    assert accel.teacher_dtype(folded, CPU, "bf16") is None  # CPU half kernels: slow or missing
    assert accel.teacher_dtype(_trained_bn_model(), CUDA, "bf16") is None  # BN stays fp32


def test_device_settings_are_restored_after_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", False)
    monkeypatch.delenv(accel.CUBLAS_WORKSPACE, raising=False)
    with accel.device_settings(CPU):
        assert cudnn.benchmark is False  # CPU: nothing to tune
    with accel.device_settings(CUDA):  # no index: no set_device, so no GPU needed
        assert cudnn.benchmark is True
    assert cudnn.benchmark is False  # not left on for the rest of the process
    with accel.device_settings(CUDA, deterministic=True):
        assert cudnn.benchmark is False and cudnn.deterministic is True
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ[accel.CUBLAS_WORKSPACE] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled() and cudnn.deterministic is False
    assert accel.CUBLAS_WORKSPACE not in os.environ


def test_single_process_on_cuda_n_makes_it_the_current_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current = [0]
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(
        torch.cuda,
        "set_device",
        lambda d: current.__setitem__(0, torch.device(d).index if not isinstance(d, int) else d),
    )
    with accel.device_settings(torch.device("cuda:1")):
        assert current[0] == 1  # bf16 checks, pinned memory and launches address GPU 1
    assert current[0] == 0


@pytest.mark.parametrize(
    ("requested", "device", "static", "world", "mode"),
    [
        (None, "cpu", True, 1, None),  # auto: eager on CPU
        (True, "cpu", True, 1, "default"),
        (False, "cuda", True, 1, None),
        (None, "cuda", True, 1, "reduce-overhead"),  # auto on CUDA: CUDA graphs
        (None, "cuda", False, 1, None),  # a batch would be short: eager, with the reason
        (True, "cuda", False, 1, "default"),
        (None, "cuda", True, 2, "default"),  # DDP: no CUDA graphs
    ],
)
def test_compile_mode_follows_device_shapes_and_world(
    requested, device, static, world, mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accel, "_has_triton", lambda: True)
    plan = accel.resolve_compile(requested, torch.device(device), static, world)
    assert plan.mode == mode
    assert (plan.reason is None) == (mode is not None)
    monkeypatch.setattr(accel, "_has_triton", lambda: False)
    if device == "cuda" and requested is not False:
        assert accel.resolve_compile(requested, CUDA, static, world) == accel.CompilePlan(
            None, "triton is not installed (torch.compile needs it on CUDA)"
        )


def test_compiled_step_gives_the_losses_of_the_eager_step(
    digits_splits, teacher_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dynamo capture plus AOT autograd (forward and backward graphs, as inductor gets them),
    run without code generation: the same losses, epoch by epoch, as the eager step."""
    import dataclasses

    from compressor.data.splits import Split

    monkeypatch.setattr(accel, "COMPILE_BACKEND", "aot_eager")
    full = (len(digits_splits.train) // 128) * 128  # every batch full: no dropped images
    train = Split(digits_splits.train.images[:full], digits_splits.train.labels[:full])
    splits = dataclasses.replace(digits_splits, train=train)
    teacher = load_bundle(teacher_path).model
    runs = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        student = build_model("cifar_resnet8_w8", 10, 1)
        cfg = TrainConfig(epochs=2, batch_size=128, lr=0.05, device="cpu", compile=compiled)
        runs[compiled] = distill(teacher, student, splits, MEAN, STD, LossConfig(), cfg)
    assert runs[True].step["compile_mode"] == "default" and runs[False].step["compiled"] is False
    eager = [row["loss"] for row in runs[False].history]
    compiled_losses = [row["loss"] for row in runs[True].history]
    assert compiled_losses == pytest.approx(eager, rel=1e-4)


def test_compiled_step_never_recompiles_for_the_short_last_batch(
    digits_splits, teacher_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The training split is not a multiple of the batch: compiled, the short batch is dropped."""
    import torch._dynamo

    monkeypatch.setattr(accel, "COMPILE_BACKEND", "eager")
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    torch._dynamo.reset()
    assert len(digits_splits.train) % 128 != 0
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2, batch_size=128, device="cpu", compile=True)
    student = build_model("cifar_resnet8_w8", 10, 1)
    teacher = load_bundle(teacher_path).model
    result = distill(teacher, student, digits_splits, MEAN, STD, LossConfig(), cfg)
    per_epoch = (len(digits_splits.train) // 128) * 128  # uncompiled runs see every image
    assert [row["samples"] for row in result.history] == [per_epoch, per_epoch]


def test_nhwc_unsafe_layer_names_small_strided_pointwise_convolutions() -> None:
    """oneDNN#6035: NHWC 1x1 stride-2 weight gradients with < 16 input channels are wrong or
    abort; such students must train NCHW on CPU."""
    nhwc_unsafe_layer = accel.nhwc_unsafe_layer
    assert nhwc_unsafe_layer(build_model("cifar_resnet8_w8", 10, 3)) == "layers.1.shortcut.0"
    assert nhwc_unsafe_layer(build_model("cifar_resnet8_w16", 10, 3)) is None
    pointwise = nn.Sequential(nn.Conv2d(8, 16, 1, stride=1))
    assert nhwc_unsafe_layer(pointwise) is None  # stride 1: no workspace, no bug
    grouped = nn.Sequential(nn.Conv2d(64, 64, 1, stride=2, groups=8))
    assert nhwc_unsafe_layer(grouped) == "0"  # 8 input channels per group


def test_cpu_step_trains_nchw_when_the_student_has_an_unsafe_layer(digits_splits) -> None:
    cfg = TrainConfig(epochs=1, batch_size=256, device="cpu", bn_recalibration_images=0)
    for arch, unsafe in (("cifar_resnet8_w8", "layers.1.shortcut.0"), ("cifar_resnet8_w16", None)):
        student = build_model(arch, 10, 1)
        result = distill(None, student, digits_splits, (0.5,), (0.5,), LossConfig(method="ce"), cfg)
        assert result.step["nhwc_unsafe_layer"] == unsafe
        assert result.step["channels_last"] is (unsafe is None)


def test_cached_logits_from_the_host_never_read_device_indices_back() -> None:
    """A host cache is indexed with the host copy of the rows: the device indices (here on the
    meta device, where any read-back raises) are never copied to the host (#24)."""
    from compressor.train.step import cached_logits

    cache = torch.arange(20.0).reshape(10, 2)
    host_idx = torch.tensor([3, 1, 7])
    device_idx = host_idx.to("meta")
    rows = cached_logits(cache, device_idx, host_idx)
    assert rows.device.type == "meta" and rows.shape == (3, 2)
    assert torch.equal(cached_logits(cache, host_idx, host_idx), cache[host_idx])  # same device
