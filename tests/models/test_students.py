import pytest
import torch

from compressor.errors import CompressorError
from compressor.models.registry import (
    FAMILIES,
    Builder,
    build_model,
    count_flops,
    count_params,
    default_family,
    get_family,
)


def test_cifar_ladder_is_ordered_by_cost_and_builds() -> None:
    ladder = get_family("cifar_resnet").ladder
    assert len(ladder) >= 5
    flops = [count_flops(build_model(n, 10, 1), (1, 8, 8)) for n in ladder]
    params = [count_params(build_model(n, 10, 1)) for n in ladder]
    assert flops[0] < flops[-1] and params[0] < params[-1]


@pytest.mark.parametrize("name", ["mobilenet_v3_small_x0.25", "regnet_x_200mf"])
def test_torchvision_students_take_classes_and_channels(name: str) -> None:
    model = build_model(name, 7, 1).eval()
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 7)


def test_default_family_by_input_size() -> None:
    assert default_family((32, 32)) == "cifar_resnet"
    assert default_family((224, 224)) == "torchvision_mix"
    assert set(FAMILIES) >= {"cifar_resnet", "torchvision_mix", "mobilenet_v3", "resnet", "regnet"}


def test_unknown_names() -> None:
    with pytest.raises(CompressorError, match="unknown architecture"):
        build_model("nope", 10)
    with pytest.raises(CompressorError, match="unknown student family"):
        get_family("nope")


def test_a_registered_family_is_selectable_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/design.md's "a student family" recipe: register archs, then the family."""
    from compressor.models import registry as students

    monkeypatch.setattr(students, "_ARCHS", dict(students._ARCHS))
    monkeypatch.setattr(students, "FAMILIES", dict(students.FAMILIES))
    for width in (4, 8):
        students.register(f"tiny_mlp_w{width}", _tiny_mlp(width))
    with pytest.raises(CompressorError, match=r"unregistered archs: \['tiny_mlp_w16'\]"):
        students.register_family(students.Family("tiny", ("tiny_mlp_w16",), 8, "no such arch"))
    students.register_family(
        students.Family("tiny", ("tiny_mlp_w4", "tiny_mlp_w8"), 8, "two-layer MLPs")
    )
    assert get_family("tiny").ladder == ("tiny_mlp_w4", "tiny_mlp_w8")
    model = build_model("tiny_mlp_w8", num_classes=3, in_channels=1)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


def _tiny_mlp(width: int) -> Builder:
    def build(num_classes: int, in_channels: int) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(in_channels * 64, width),
            torch.nn.ReLU(),
            torch.nn.Linear(width, num_classes),
        )

    return build
