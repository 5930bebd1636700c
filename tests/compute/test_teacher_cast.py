"""The teacher cast to bf16 for the CUDA step is a copy: the caller's teacher stays fp32 (#24).

CUDA is not needed: ``teacher_dtype`` is asked about CUDA whatever the device, which forces the
low-precision path on CPU. Before the fix ``prepare_teacher`` cast the caller's module in place,
and the verification that follows training failed with "Input type (torch.FloatTensor) and
weight type (CPUBFloat16Type) should be the same".
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from compressor.compute import speed as accel
from compressor.compute.inference import predict_logits
from compressor.data.splits import Split
from compressor.losses.total import LossConfig
from compressor.models.archives import FrozenGraph
from compressor.models.checkpoint import load_bundle
from compressor.models.registry import build_model
from compressor.train.loop import TrainConfig, distill

MEAN, STD = (0.5,), (0.5,)


def _no_batchnorm_teacher() -> nn.Module:
    """An eager teacher with LayerNorm-like normalisation only (no BatchNorm anywhere)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.GroupNorm(1, 8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()


def _kinds(teacher_path) -> dict[str, nn.Module]:
    bundled = load_bundle(teacher_path).model.eval()  # has BatchNorm
    example = torch.randn(2, 1, 8, 8)
    exported = torch.export.export(
        load_bundle(teacher_path).model.eval(),
        (example,),
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
    )
    return {
        "eager without BatchNorm": _no_batchnorm_teacher(),
        "TorchScript": torch.jit.script(bundled),
        "torch.export": FrozenGraph(exported.module()),
    }


@pytest.fixture
def forced_cuda_cast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ask ``teacher_dtype`` about CUDA whatever the device: the bf16 path runs on CPU."""
    original = accel.teacher_dtype
    monkeypatch.setattr(
        accel,
        "teacher_dtype",
        lambda model, device, precision: original(model, torch.device("cuda"), precision),
    )


@pytest.mark.parametrize("kind", ["eager without BatchNorm", "TorchScript", "torch.export"])
def test_training_in_bf16_leaves_the_callers_teacher_in_fp32(
    kind: str, forced_cuda_cast, digits_splits, teacher_path
) -> None:
    teacher = _kinds(teacher_path)[kind]
    images = digits_splits.test.images[:64]
    # 256 training images: bf16 on a CPU without bf16 units is emulated (slow); what is checked
    # is the teacher after training, not what the student learns.
    small = dataclasses.replace(
        digits_splits,
        train=Split(digits_splits.train.images[:256], digits_splits.train.labels[:256]),
        val=Split(digits_splits.val.images[:64], digits_splits.val.labels[:64]),
    )
    before = predict_logits(teacher, images, MEAN, STD, device=torch.device("cpu"))
    torch.manual_seed(0)
    student = build_model("cifar_resnet8_w8", 10, 1)
    distill(
        teacher,
        student,
        small,
        MEAN,
        STD,
        LossConfig(),
        TrainConfig(epochs=1, batch_size=256, device="cpu", precision="bf16", hflip=False,
                    bn_recalibration_images=0),
    )  # fmt: skip
    assert {p.dtype for p in teacher.parameters()} == {torch.float32}
    assert {b.dtype for b in teacher.buffers() if b.is_floating_point()} <= {torch.float32}
    # What verification does after training: the teacher on CPU, fp32 input.
    after = predict_logits(teacher, images, MEAN, STD, device=torch.device("cpu"))
    torch.testing.assert_close(after, before)


def test_batchnorm_hidden_in_archive_graphs_is_found(teacher_path) -> None:
    kinds = _kinds(teacher_path)
    assert not accel.contains_batchnorm(kinds["eager without BatchNorm"])
    assert accel.contains_batchnorm(kinds["TorchScript"])
    assert accel.contains_batchnorm(kinds["torch.export"])
    cuda = torch.device("cuda")
    # Archives keep their BatchNorm statistics in fp32: never cast, not even a copy.
    assert accel.teacher_dtype(kinds["TorchScript"], cuda, "bf16") is None
    assert accel.teacher_dtype(kinds["torch.export"], cuda, "bf16") is None
    assert accel.teacher_dtype(kinds["eager without BatchNorm"], cuda, "bf16") == torch.bfloat16


def test_the_cast_copy_is_what_the_step_runs(forced_cuda_cast) -> None:
    teacher = _no_batchnorm_teacher()
    prepared, folded = accel.prepare_teacher(
        teacher, torch.device("cpu"), channels_last=True, example=torch.randn(4, 1, 8, 8),
        precision="bf16",
    )  # fmt: skip
    assert not folded and prepared is not teacher
    assert {p.dtype for p in prepared.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in teacher.parameters()} == {torch.float32}
    assert all(not p.requires_grad for p in prepared.parameters())
