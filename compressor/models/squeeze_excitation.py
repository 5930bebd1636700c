"""Removing squeeze-excitation from a derived student: speed that channel pruning cannot buy.

At batch 1 on a CPU, a squeeze-excitation block is cheap in MACs but not in time: a global
pool, two 1x1 convolutions on a 1x1 map, a gate and a multiply, plus onnxruntime's reorders out
of and back into its blocked NCHWc layout around the pool. Removing all nine from
mobilenet_v3_small made it 1.41-1.45x faster on a 2-core AVX-512 host (docs/pruning.md), about
what pruning half its MACs buys, while width pruning barely shrinks these fixed costs.

Each removed block's gate is replaced by its expected value, folded into the input channels of
the 1x1 convolution that follows it: the gate of the mean activation, where the mean activation
of each channel comes from the preceding BatchNorm's affine parameters (its output is
``N(bias, weight^2)`` per channel when its running statistics describe the data), so the fold
needs no data and a pruned bundle rebuilds the same structure anywhere. Precise BatchNorm and
distillation then correct what a constant gate misses.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.misc import SqueezeExcitation

from compressor.errors import CompressorError

QUANTILES = 64  # points of the standard normal used for the expected activation


def _expected_activation(norm: _BatchNorm, activation: nn.Module) -> torch.Tensor:
    """E[activation(x)] per channel for x ~ N(norm.bias, norm.weight^2)."""
    levels = (torch.arange(QUANTILES, dtype=torch.float32) + 0.5) / QUANTILES
    normal = torch.distributions.Normal(0.0, 1.0).icdf(levels)
    affine = norm.weight is not None and norm.bias is not None
    weight = norm.weight.detach().float() if affine else torch.ones(norm.num_features)
    bias = norm.bias.detach().float() if affine else torch.zeros(norm.num_features)
    pre = weight[:, None] * normal[None, :] + bias[:, None]
    return activation(pre).mean(dim=1)


def _fold_parts(
    before: nn.Module, after: nn.Module
) -> tuple[_BatchNorm, nn.Module, nn.Conv2d] | None:
    """(BatchNorm, activation, 1x1 conv) when a Conv-BN-activation block comes before and a
    block starting with a plain 1x1 convolution after; None when the gate cannot be folded."""
    if not (isinstance(before, nn.Sequential) and isinstance(after, nn.Sequential)):
        return None
    if len(before) != 3 or not len(after):
        return None
    norm, activation, conv = before[1], before[2], after[0]
    if not (isinstance(norm, _BatchNorm) and isinstance(conv, nn.Conv2d)):
        return None
    if conv.groups != 1 or tuple(conv.kernel_size) != (1, 1):
        return None
    return (norm, activation, conv) if conv.in_channels == norm.num_features else None


@torch.no_grad()
def remove_squeeze_excitation(model: nn.Module) -> list[str]:
    """Replace every foldable torchvision ``SqueezeExcitation`` by its folded mean gate.

    A block qualifies when it sits in an ``nn.Sequential`` between a Conv-BN-activation block
    and a block that starts with a 1x1 convolution (mobilenet_v3, efficientnet, regnet_y).
    Others are left in place. Modifies ``model``; returns the removed blocks' names.
    """
    removed: list[str] = []
    for parent_name, parent in list(model.named_modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for index, (name, child) in enumerate(children):
            if not isinstance(child, SqueezeExcitation) or not 0 < index < len(children) - 1:
                continue
            parts = _fold_parts(children[index - 1][1], children[index + 1][1])
            if parts is None:
                continue
            norm, activation, conv = parts
            mean = _expected_activation(norm, activation).view(1, -1, 1, 1)
            pooled = child.fc2(child.activation(child.fc1(mean.to(conv.weight.dtype))))
            gate = child.scale_activation(pooled).view(1, -1, 1, 1)
            conv.weight.mul_(gate.to(conv.weight.dtype))
            setattr(parent, name, nn.Identity())
            removed.append(f"{parent_name}.{name}" if parent_name else name)
    return removed


def drop_squeeze_excitation(model: nn.Module, names: Iterable[str]) -> None:
    """Rebuild a recorded removal: replace each named ``SqueezeExcitation`` by ``nn.Identity``.

    Raises:
        CompressorError: a name the model lacks, or one that is not a squeeze-excitation block.
    """
    modules = dict(model.named_modules())
    for name in names:
        module = modules.get(str(name))
        if not isinstance(module, SqueezeExcitation):
            found = "no such layer" if module is None else type(module).__name__
            raise CompressorError(
                f"pruning record removes squeeze-excitation block '{name}', but the "
                f"architecture has {found} there"
            )
        parent_name, _, child = str(name).rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, nn.Identity())
