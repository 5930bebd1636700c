"""Starting a student from pretrained weights (``--student-init``) instead of random ones.

Production students start from ImageNet (or in-house) weights; a few thousand images and a
short schedule do not train a network from scratch. The weights are a state dict or a
compressor bundle for the chosen architecture, a folder of ``<arch>.pt`` files so that
whichever candidate selection picks can start from its own, or ``torchvision``: torchvision's
published ImageNet weights for the architecture, through its weights API and download cache
(``TORCH_HOME``), so an offline machine with a filled cache works and one without gets one line.
The classifier is re-initialised when the class count differs; any other mismatch is an error,
never a silent partial load.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from compressor.errors import CompressorError
from compressor.models.checkpoint import (
    BUNDLE_FORMAT,
    _extract_state_dict,
    _torch_load,
    file_sha256,
    load_into,
)


@dataclass(frozen=True)
class StudentInit:
    """What was loaded into the student, for the report."""

    path: str
    sha256: str
    loaded_tensors: int
    reinitialised: list[str]  # classifier keys left random (another class count)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TORCHVISION = "torchvision"


def is_torchvision_init(source: Path | str | None) -> bool:
    """``--student-init torchvision``: the published weights, not a path."""
    return source is not None and str(source) == TORCHVISION


def torchvision_weights(arch: str) -> Any:
    """torchvision's default published weights for a student arch (None: it publishes none).

    Ladder names with a width multiplier have weights only at x1.0 (``mobilenet_v3_small_x1.0``
    is torchvision's ``mobilenet_v3_small``)."""
    name = arch.removesuffix("_x1.0")
    if name not in torchvision.models.list_models(module=torchvision.models):
        return None
    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def torchvision_cache_file(weights: Any) -> Path:
    """Where torch.hub keeps (or will keep) the weights file: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _torchvision_state(arch: str) -> tuple[dict[str, torch.Tensor], Path]:
    weights = torchvision_weights(arch)
    if weights is None:
        raise CompressorError(
            f"--student-init torchvision: torchvision publishes no weights for {arch}"
        )
    cached = torchvision_cache_file(weights)
    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as exc:  # URLError, HTTPError, OSError, a corrupt file: all "not available"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompressorError(
            f"--student-init torchvision: {weights} for {arch} is not in the cache ({cached}) "
            f"and could not be downloaded ({first}); fetch it once with network access or "
            "point TORCH_HOME at a cache that has it"
        ) from exc
    return dict(state), cached


def init_file(source: Path, arch: str) -> Path | None:
    """The weights for ``arch``: the file itself, or ``<arch>.pt`` in a folder (None if absent)."""
    if source.is_dir():
        candidate = source / f"{arch}.pt"
        return candidate if candidate.is_file() else None
    if not source.exists():
        raise CompressorError(f"--student-init not found: {source}")
    return source


def _head_keys(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> list[str]:
    """Keys of the classifier whose only difference is the number of classes (dimension 0)."""
    classes = next(v.shape[0] for k, v in reversed(own.items()) if v.ndim == 2)
    return [
        k
        for k, v in own.items()
        if k in state
        and v.ndim in (1, 2)
        and state[k].ndim == v.ndim
        and v.shape[0] == classes
        and state[k].shape[0] != classes
        and tuple(state[k].shape[1:]) == tuple(v.shape[1:])
    ]


def load_student_init(
    model: nn.Module, arch: str, source: Path, trust_checkpoint: bool = False
) -> StudentInit | None:
    """Load pretrained weights into ``model`` (in place); None when a folder has none for it.

    Raises:
        CompressorError: unreadable file, a bundle of another architecture, or keys that do not
            match the architecture (named, as for teachers).
    """
    if is_torchvision_init(source):
        state, cached = _torchvision_state(arch)
        return _load_state(model, arch, state, cached, f"torchvision weights {cached.name}")
    path = init_file(Path(source), arch)
    if path is None:
        return None
    obj = _torch_load(path, trust_checkpoint)
    if isinstance(obj, dict) and obj.get("format") == BUNDLE_FORMAT:
        if obj.get("arch") != arch:
            raise CompressorError(
                f"--student-init {path} is a bundle of {obj.get('arch')}, the student is {arch}"
            )
        obj = obj.get("state_dict")
    state = _extract_state_dict(obj)
    if state is None:
        raise CompressorError(f"--student-init {path}: no state dict found")
    return _load_state(model, arch, state, path, f"--student-init {path}")


def _load_state(
    model: nn.Module, arch: str, state: dict[str, torch.Tensor], path: Path, what: str
) -> StudentInit:
    """Load ``state`` with the classifier left random when only its class count differs."""
    own = {k: v for k, v in model.state_dict().items()}
    head = _head_keys(own, state)
    merged = {**state, **{k: own[k] for k in head}}
    load_into(model, merged, f"{what} (for {arch})")
    return StudentInit(str(path), file_sha256(path), len(state) - len(head), head)
