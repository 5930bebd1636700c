"""Shared fixtures: the embedded digits as an ImageFolder, a tiny trained teacher, fast profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import Phase, settings

from compressor.checkpoint import save_bundle
from compressor.cpu_check import MIN_CPU_SHARE_ENV
from compressor.data import load_image_folder
from compressor.demo import build_digits_imagefolder
from compressor.distill import TrainConfig, distill
from compressor.losses import LossConfig
from compressor.students import build_model

TINY_SHAPE = (1, 8, 8)  # the digits' native resolution keeps every test fast
TEACHER_ARCH = "cifar_resnet20_w32"  # several times slower than the test students (speedup rule)

if "MUTANT_UNDER_TEST" in os.environ:
    # Under mutmut only pass/fail counts: a property that fails is not shrunk to its smallest
    # example (shrinking re-runs it hundreds of times, per killed mutant) and no example
    # database is written. Loaded before the test modules, so their @settings inherit it.
    settings.register_profile("mutmut", phases=(Phase.explicit, Phase.generate), database=None)
    settings.load_profile("mutmut")


def write_profile(path: Path, **overrides: object) -> Path:
    """A fast-timing profile for 8x8 digits; ``overrides`` replace 'table.key' entries."""
    values: dict[str, object] = {
        "name": '"tiny"',
        "description": '"tests: 8x8 digits"',
        "input.shape": "[1, 8, 8]",
        "input.batch_size": "1",
        "runtime.intra_op_threads": "1",
        "budget.latency_ms": "5.0",
        "budget.percentile": "90",
        "budget.warmup_runs": "2",
        "budget.min_iterations": "20",
        "budget.min_seconds": "0.0",
        "gates.max_top1_drop": "1.0",
        "export.opset": "18",
    }
    values.update({k: str(v) for k, v in overrides.items()})
    tables: dict[str, list[str]] = {}
    top = []
    for key, value in values.items():
        if value == "DELETE":
            continue
        if "." in key:
            table, name = key.split(".", 1)
            tables.setdefault(table, []).append(f"{name} = {value}")
        else:
            top.append(f"{key} = {value}")
    text = "\n".join(top) + "\n"
    for table, lines in tables.items():
        text += f"\n[{table}]\n" + "\n".join(lines) + "\n"
    path.write_text(text)
    return path


def perturb_one_weight(source: Path, target: Path, delta: float = 5.0) -> Path:
    """Copy an ONNX model, changing one element of its largest weight tensor by ``delta``."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(biggest).copy()
    weights.flat[0] += delta
    biggest.CopyFrom(numpy_helper.from_array(weights, biggest.name))
    onnx.save(model, str(target))
    return target


@pytest.fixture(scope="session", autouse=True)
def _isolated_data_cache(tmp_path_factory: pytest.TempPathFactory):
    """Runs under test write their decoded-image cache to a temporary folder, not ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPRESSOR_CACHE_DIR", str(tmp_path_factory.mktemp("data-cache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def _contention_not_judged():
    """The suite checks what the tool decides, not how idle the CI host is: a busy runner must
    not turn an end-to-end test into "inconclusive" (exit 3). Tests of the contention path
    use :func:`judge_contention`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MIN_CPU_SHARE_ENV, "0")
        yield


@pytest.fixture
def judge_contention(monkeypatch: pytest.MonkeyPatch) -> None:
    """Contention is judged as in production (the default share, no override)."""
    monkeypatch.delenv(MIN_CPU_SHARE_ENV, raising=False)


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_digits_imagefolder(tmp_path_factory.mktemp("digits") / "data")


@pytest.fixture(scope="session")
def digits_splits(digits_root: Path):
    return load_image_folder(digits_root, TINY_SHAPE, seed=0)


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory: pytest.TempPathFactory, digits_splits) -> Path:
    """A real (briefly trained) teacher bundle for 8x8 digits."""
    torch.manual_seed(0)
    model = build_model(TEACHER_ARCH, 10, 1)
    result = distill(
        None,
        model,
        digits_splits,
        (0.5,),
        (0.5,),
        LossConfig(method="ce", bias_aware=False),
        TrainConfig(epochs=4, batch_size=64, lr=0.1, hflip=False, device="cpu"),
    )
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_bundle(
        path,
        result.student,
        TEACHER_ARCH,
        num_classes=10,
        in_channels=1,
        input_size=TINY_SHAPE[1:],
        mean=(0.5,),
        std=(0.5,),
        class_names=digits_splits.class_names,
    )
    return path


@pytest.fixture
def tiny_profile(tmp_path: Path) -> Path:
    return write_profile(tmp_path / "tiny.toml")
