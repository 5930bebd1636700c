"""Registry of model architectures: student families (ordered size ladders) and teacher archs.

Like timm's registry, every architecture is addressed by a string name, so checkpoints, reports
and the CLI can refer to a model without pickling code. A *family* is a ladder of names ordered
by cost; selection walks it from cheap to expensive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from compressor.errors import CompressorError

# ---------------------------------------------------------------------------------------------
# CIFAR-style ResNet (He et al. 2016, section 4.2): 3 stages of widths (w, 2w, 4w), depth 6n+2.


class _BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small inputs (<= 64 px): (N, C, H, W) -> logits (N, num_classes)."""

    def __init__(self, depth: int, width: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 >= 8, got {depth}")
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers: list[nn.Module] = []
        in_ch = width
        for stage, out_ch in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks):
                layers.append(_BasicBlock(in_ch, out_ch, 2 if stage > 0 and i == 0 else 1))
                in_ch = out_ch
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


# ---------------------------------------------------------------------------------------------
# Registry

Builder = Callable[[int, int], nn.Module]  # (num_classes, in_channels) -> model


@dataclass(frozen=True)
class Family:
    """A ladder of architecture names, cheapest first, and the input sizes it suits."""

    name: str
    ladder: tuple[str, ...]
    max_input: int  # largest input side (px) it is meant for
    description: str


_ARCHS: dict[str, Builder] = {}


def register(name: str, builder: Builder) -> None:
    """Add an architecture to the registry."""
    _ARCHS[name] = builder


def _cifar(depth: int, width: int) -> Builder:
    return lambda nc, ch: CifarResNet(depth, width, nc, ch)


_CIFAR_LADDER = (
    (8, 8), (8, 16), (14, 16), (20, 16), (32, 16), (20, 24), (32, 24), (20, 32), (32, 32), (44, 32),
    (20, 64),
)  # fmt: skip
for _d, _w in _CIFAR_LADDER:
    register(f"cifar_resnet{_d}_w{_w}", _cifar(_d, _w))
register("cifar_resnet56_w64", _cifar(56, 64))  # a teacher-sized model, not on the ladder


def _adapt_input_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """Replace the first 3-channel convolution of a torchvision model for 1-channel input."""
    if in_channels == 3:
        return model
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                new = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,  # type: ignore[arg-type]
                    child.stride,  # type: ignore[arg-type]
                    child.padding,  # type: ignore[arg-type]
                    bias=child.bias is not None,
                )
                setattr(parent, child_name, new)
                return model
    raise CompressorError(f"cannot adapt {type(model).__name__} to {in_channels} input channels")


def _torchvision(name: str, **kwargs: object) -> Builder:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        return _adapt_input_channels(model, in_channels)

    return build


_MOBILENET_SMALL = (0.25, 0.5, 0.75, 1.0)
_MOBILENET_LARGE = (0.75, 1.0, 1.25)
for _m in _MOBILENET_SMALL:
    register(f"mobilenet_v3_small_x{_m}", _torchvision("mobilenet_v3_small", width_mult=_m))
for _m in _MOBILENET_LARGE:
    register(f"mobilenet_v3_large_x{_m}", _torchvision("mobilenet_v3_large", width_mult=_m))


def _regnet_x_200mf(num_classes: int, in_channels: int) -> nn.Module:
    """RegNetX-200MF (Radosavovic et al. 2020, table of RegNetX models); torchvision lacks it."""
    from torchvision.models.regnet import BlockParams, RegNet

    params = BlockParams.from_init_params(depth=13, w_0=24, w_a=36.44, w_m=2.49, group_width=8)
    return _adapt_input_channels(RegNet(params, num_classes=num_classes), in_channels)


register("regnet_x_200mf", _regnet_x_200mf)
_REGNETS = (
    "regnet_x_200mf",
    "regnet_x_400mf",
    "regnet_x_800mf",
    "regnet_x_1_6gf",
    "regnet_x_3_2gf",
)
_REGNET_YS = ("regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf")
_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
_EFFICIENTNETS = ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3")
for _r in (*_REGNETS[1:], *_REGNET_YS, *_RESNETS, *_EFFICIENTNETS):
    register(_r, _torchvision(_r))
_MOBILENETS = (
    *(f"mobilenet_v3_small_x{m}" for m in _MOBILENET_SMALL),
    *(f"mobilenet_v3_large_x{m}" for m in _MOBILENET_LARGE),
)

FAMILIES: dict[str, Family] = {
    "cifar_resnet": Family(
        "cifar_resnet",
        tuple(f"cifar_resnet{d}_w{w}" for d, w in _CIFAR_LADDER),
        64,
        "CIFAR-style ResNet, depth x width, for inputs up to 64 px",
    ),
    "torchvision_mix": Family(
        "torchvision_mix",
        (
            *_MOBILENETS[1:],
            "regnet_y_400mf",
            "efficientnet_b0",
            "regnet_y_800mf",
            "resnet18",
            "efficientnet_b1",
            "regnet_y_1_6gf",
            "resnet34",
            "efficientnet_b2",
            "regnet_y_3_2gf",
            "resnet50",
        ),
        4096,
        "torchvision MobileNetV3, RegNetY, EfficientNet and ResNet from 20 MFLOPs to 4 GFLOPs: "
        "the default above 64 px, covering budgets from ~1 ms to ~50 ms on 2 CPU threads",
    ),
    "mobilenet_v3": Family(
        "mobilenet_v3",
        _MOBILENETS,
        4096,
        "torchvision MobileNetV3 small/large with width multipliers, for inputs above 64 px",
    ),
    "resnet": Family("resnet", _RESNETS, 4096, "torchvision ResNet 18 to 101"),
    "efficientnet": Family("efficientnet", _EFFICIENTNETS, 4096, "torchvision EfficientNet B0-B3"),
    "regnet": Family("regnet", _REGNETS, 4096, "torchvision RegNetX from 200MF up"),
    "regnet_y": Family("regnet_y", _REGNET_YS, 4096, "torchvision RegNetY from 400MF up"),
}


def register_family(family: Family) -> None:
    """Add a student family (``--family NAME``); its ladder's names must be registered archs."""
    unknown = [name for name in family.ladder if name not in _ARCHS]
    if unknown:
        raise CompressorError(f"family '{family.name}' lists unregistered archs: {unknown}")
    FAMILIES[family.name] = family


# A torchvision teacher's own family, by name prefix: its smaller members are preferred.
_TEACHER_FAMILIES = (
    ("mobilenet_v3", "mobilenet_v3"),
    ("resnet", "resnet"),
    ("efficientnet_b", "efficientnet"),
    ("regnet_y", "regnet_y"),
    ("regnet_x", "regnet"),
)


def default_family(input_hw: tuple[int, int]) -> str:
    """The family suited to an input resolution: CIFAR ResNets up to their ``max_input``
    (64 px), a torchvision mix above."""
    return (
        "cifar_resnet" if max(input_hw) <= FAMILIES["cifar_resnet"].max_input else "torchvision_mix"
    )


def families_to_try(
    family: str | None, has_candidates: bool, teacher_arch: str, input_hw: tuple[int, int]
) -> list[str]:
    """The families selection walks: the one asked for; the default when a candidate subset
    is given (its names are the default ladder's); else the teacher's own, then the default."""
    if family:
        return [family]
    if has_candidates:
        return [default_family(input_hw)]
    return preferred_families(teacher_arch, input_hw)


def preferred_families(teacher_arch: str, input_hw: tuple[int, int]) -> list[str]:
    """Families to try in order: the teacher's own (smaller members of what the user already
    trusts at this resolution), then the default for the input size."""
    default = default_family(input_hw)
    if default == "cifar_resnet":
        return [default]
    own = next((fam for prefix, fam in _TEACHER_FAMILIES if teacher_arch.startswith(prefix)), None)
    return [own, default] if own and own != default else [default]


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise CompressorError(f"unknown student family '{name}'; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def _torchvision_classifiers() -> set[str]:
    return set(torchvision.models.list_models(module=torchvision.models))


def known_arch(name: str) -> bool:
    """Whether ``name`` is a registered arch, a torchvision model, or ``timm:<name>``."""
    return name in _ARCHS or name in _torchvision_classifiers() or name.startswith("timm:")


def _timm(name: str, num_classes: int, in_channels: int) -> nn.Module:
    """A timm architecture (randomly initialised; weights come from the checkpoint)."""
    try:
        import timm
    except ImportError as exc:
        raise CompressorError(f"--arch {name} needs timm: pip install 'compressor[timm]'") from exc
    model_name = name.split(":", 1)[1]
    if model_name not in timm.list_models():
        raise CompressorError(f"unknown timm architecture '{model_name}'")
    return timm.create_model(
        model_name, pretrained=False, num_classes=num_classes, in_chans=in_channels
    )


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Instantiate a registered or torchvision classification architecture, randomly initialised."""
    if name in _ARCHS:
        return _ARCHS[name](num_classes, in_channels)
    if name.startswith("timm:"):
        return _timm(name, num_classes, in_channels)
    if name in _torchvision_classifiers():
        return _torchvision(name)(num_classes, in_channels)
    raise CompressorError(
        f"unknown architecture '{name}': use a compressor arch ({', '.join(sorted(_ARCHS))}), "
        "a torchvision classification model name (e.g. resnet18), or timm:<name>"
    )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """FLOPs (multiply and add counted separately) of one forward pass on one image."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    return int(counter.get_total_flops())
