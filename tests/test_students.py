import pytest
import torch

from compressor.errors import CompressorError
from compressor.students import (
    FAMILIES,
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
