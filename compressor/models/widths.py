"""Per-layer widths: how a width-pruned model differs from its architecture, as plain numbers.

A student derived from the teacher by structural pruning (:mod:`compressor.models.pruning`) has the
teacher's layers with fewer channels. Saving it as a pickled module would make ``student.pt``
unloadable with ``weights_only=True``; instead the bundle records, for every layer whose shape
is set by its constructor arguments, those arguments (ints and lists only). Loading builds the
teacher architecture, applies the recorded widths, resizes the parameters to match and loads
the state dict, so a record that disagrees with its weights is a named error, not a silent
partial load. This module needs torch only (no pruning library).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from compressor.errors import CompressorError

# The constructor attributes that fix each layer type's parameter shapes.
_SHAPE_ATTRS: tuple[tuple[type[nn.Module], tuple[str, ...]], ...] = (
    (_ConvNd, ("in_channels", "out_channels", "groups")),
    (nn.Linear, ("in_features", "out_features")),
    (_BatchNorm, ("num_features",)),
    (nn.LayerNorm, ("normalized_shape",)),
    (nn.GroupNorm, ("num_groups", "num_channels")),
    (nn.PReLU, ("num_parameters",)),
)


def _shape_attrs(module: nn.Module) -> tuple[str, ...] | None:
    for kind, attrs in _SHAPE_ATTRS:
        if isinstance(module, kind):
            return attrs
    return None


def _plain(value: Any) -> Any:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else int(value)


def layer_widths(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module name: {attribute: int or list}}`` for every layer with shape attributes."""
    out: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        attrs = _shape_attrs(module)
        if attrs is not None:
            out[name] = {a: _plain(getattr(module, a)) for a in attrs}
    return out


def _resize(module: nn.Module, name: str, param: str, shape: tuple[int, ...]) -> None:
    current = getattr(module, param, None)
    if current is None:
        return
    fresh = torch.empty(shape, dtype=current.dtype)
    if isinstance(current, nn.Parameter):
        setattr(module, param, nn.Parameter(fresh, requires_grad=current.requires_grad))
    else:
        module.register_buffer(param, fresh)


def _apply(module: nn.Module, name: str, attrs: Mapping[str, Any]) -> None:
    """Set the recorded attributes and give the parameters the shapes they imply."""
    expected = _shape_attrs(module)
    if expected is None or set(attrs) != set(expected):
        raise CompressorError(
            f"pruning record for layer '{name}' ({type(module).__name__}) has keys "
            f"{sorted(attrs)}, expected {sorted(expected or ())}"
        )
    for key, value in attrs.items():
        setattr(module, key, tuple(value) if isinstance(value, list) else int(value))
    if isinstance(module, _ConvNd):
        if module.in_channels % module.groups or module.out_channels % module.groups:
            raise CompressorError(
                f"pruning record for layer '{name}': {module.in_channels} in / "
                f"{module.out_channels} out channels are not divisible by {module.groups} groups"
            )
        kernel = tuple(module.kernel_size)
        if module.transposed:
            weight = (module.in_channels, module.out_channels // module.groups, *kernel)
        else:
            weight = (module.out_channels, module.in_channels // module.groups, *kernel)
        _resize(module, name, "weight", weight)
        _resize(module, name, "bias", (module.out_channels,))
    elif isinstance(module, nn.Linear):
        _resize(module, name, "weight", (module.out_features, module.in_features))
        _resize(module, name, "bias", (module.out_features,))
    elif isinstance(module, _BatchNorm):
        for param in ("weight", "bias", "running_mean", "running_var"):
            _resize(module, name, param, (module.num_features,))
    elif isinstance(module, nn.LayerNorm):
        for param in ("weight", "bias"):
            _resize(module, name, param, tuple(module.normalized_shape))
    elif isinstance(module, nn.GroupNorm):
        for param in ("weight", "bias"):
            _resize(module, name, param, (module.num_channels,))
    elif isinstance(module, nn.PReLU):
        _resize(module, name, "weight", (module.num_parameters,))


def apply_widths(
    model: nn.Module, widths: Mapping[str, Mapping[str, Any]], state: Mapping[str, torch.Tensor]
) -> nn.Module:
    """Turn a freshly built architecture into the pruned one ``widths`` describes (in place).

    Parameters outside the recorded layer types (e.g. ConvNeXt's ``layer_scale``) take their
    shape from ``state``; the caller then loads ``state`` with a shape check, which catches a
    record that does not match its weights.

    Raises:
        CompressorError: the record names a layer the architecture lacks, or its numbers are
            inconsistent.
    """
    modules = dict(model.named_modules())
    unknown = [name for name in widths if name not in modules]
    if unknown:
        raise CompressorError(
            f"pruning record names layers the architecture does not have: {', '.join(unknown[:3])}"
        )
    for name, attrs in widths.items():
        _apply(modules[name], name, attrs)
    for module_name, module in modules.items():
        if _shape_attrs(module) is not None:
            continue
        for param_name, param in list(module.named_parameters(recurse=False)):
            key = f"{module_name}.{param_name}" if module_name else param_name
            if key in state and tuple(state[key].shape) != tuple(param.shape):
                _resize(module, module_name, param_name, tuple(state[key].shape))
    return model


def widths_differ(model: nn.Module, reference: nn.Module) -> bool:
    """Whether ``model`` has any layer narrower or wider than ``reference``."""
    return layer_widths(model) != layer_widths(reference)
