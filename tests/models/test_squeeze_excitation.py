"""Squeeze-excitation removal for derived students: exact when the gate is constant, rebuilt
from the record on load, and a record that names the wrong layer is one error."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torchvision.ops.misc import SqueezeExcitation

from compressor.errors import CompressorError
from compressor.export.to_onnx import onnx_bytes
from compressor.models.checkpoint import load_bundle, save_bundle
from compressor.models.pruning import prune_trajectory
from compressor.models.registry import build_model
from compressor.models.squeeze_excitation import (
    _expected_activation,
    drop_squeeze_excitation,
    remove_squeeze_excitation,
)

SHAPE = (3, 32, 32)


def _se_blocks(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, SqueezeExcitation)]


def test_expected_activation_matches_the_closed_form_for_relu() -> None:
    """E[relu(X)], X ~ N(b, w^2), is b*Phi(b/w) + w*phi(b/w): the quantile estimate is close."""
    norm = nn.BatchNorm2d(3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 0.5, 2.0]))
        norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    estimate = _expected_activation(norm, nn.ReLU())
    for i, (w, b) in enumerate([(1.0, 0.0), (0.5, 1.0), (2.0, -1.0)]):
        z = b / w
        exact = b * 0.5 * (1 + math.erf(z / math.sqrt(2))) + w * math.exp(-z * z / 2) / math.sqrt(
            2 * math.pi
        )
        assert estimate[i].item() == pytest.approx(exact, abs=0.01)


def test_a_constant_gate_folds_exactly() -> None:
    """With fc2's weights zero the gate does not depend on the input: folding it must leave
    every output unchanged, and every block of mobilenet_v3_small is removed."""
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", 6, 3).eval()
    for block in model.modules():
        if isinstance(block, SqueezeExcitation):
            with torch.no_grad():
                block.fc2.weight.zero_()
                block.fc2.bias.uniform_(-2.0, 2.0)
    names = _se_blocks(model)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        before = model(x)
        removed = remove_squeeze_excitation(model)
        after = model(x)
    assert removed == names and len(names) == 9 and not _se_blocks(model)
    np.testing.assert_allclose(after.numpy(), before.numpy(), rtol=1e-4, atol=1e-5)


def test_step_zero_is_the_teacher_without_squeeze_excitation_and_reloads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = build_model("mobilenet_v3_small", 6, 3).eval()
    trajectory = prune_trajectory(teacher, "mobilenet_v3_small", 6, SHAPE, steps=4)
    first = trajectory.points[0]
    assert first.step == 0 and first.macs_ratio < 1.0 and not _se_blocks(first.model)
    assert first.description.startswith("mobilenet_v3_small without squeeze-excitation (")
    assert len(_se_blocks(teacher)) == 9  # the teacher is untouched
    record = first.record()
    assert record["removed_squeeze_excitation"] == _se_blocks(teacher)
    assert record["method"].startswith("squeeze-excitation folded")
    last = trajectory.points[-1]
    assert "without squeeze-excitation, width-pruned to" in last.description
    path = save_bundle(
        tmp_path / "s.pt", first.model, "mobilenet_v3_small", num_classes=6, in_channels=3,
        input_size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, class_names=None, pruning=record,
    )  # fmt: skip
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        reloaded = load_bundle(path).model
        np.testing.assert_allclose(reloaded(x).numpy(), first.model(x).numpy(), atol=1e-6)
        session = ort.InferenceSession(onnx_bytes(reloaded, SHAPE, 18))
        feed = {session.get_inputs()[0].name: x[:1].numpy()}
        np.testing.assert_allclose(
            session.run(None, feed)[0], reloaded(x[:1]).numpy(), rtol=1e-4, atol=1e-4
        )


def test_the_plain_trajectory_keeps_squeeze_excitation() -> None:
    teacher = build_model("mobilenet_v3_small", 6, 3).eval()
    trajectory = prune_trajectory(teacher, "mobilenet_v3_small", 6, SHAPE, steps=2, remove_se=False)
    assert all(_se_blocks(p.model) for p in trajectory.points)
    assert all(p.record()["removed_squeeze_excitation"] == [] for p in trajectory.points)


def test_a_record_that_removes_the_wrong_layer_is_one_error(tmp_path: Path) -> None:
    model = build_model("mobilenet_v3_small", 6, 3)
    with pytest.raises(CompressorError, match="has Conv2dNormActivation there"):
        drop_squeeze_excitation(model, ["features.0"])
    with pytest.raises(CompressorError, match="has no such layer there"):
        drop_squeeze_excitation(model, ["features.99.block"])
    teacher = build_model("mobilenet_v3_small", 6, 3).eval()
    point = prune_trajectory(teacher, "mobilenet_v3_small", 6, SHAPE, steps=2).points[0]
    record = point.record() | {"removed_squeeze_excitation": ["classifier.0"]}
    path = save_bundle(
        tmp_path / "bad.pt", point.model, "mobilenet_v3_small", num_classes=6, in_channels=3,
        input_size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, class_names=None, pruning=record,
    )  # fmt: skip
    with pytest.raises(
        CompressorError, match=re.escape("removes squeeze-excitation block 'classifier.0'")
    ):
        load_bundle(path)
