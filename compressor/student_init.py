"""Starting a student from pretrained weights (``--student-init``) instead of random ones.

Production students start from ImageNet (or in-house) weights; a few thousand images and a
short schedule do not train a network from scratch. The weights are a state dict or a
compressor bundle for the chosen architecture, or a folder of ``<arch>.pt`` files so that
whichever candidate selection picks can start from its own. The classifier is re-initialised
when the class count differs; any other mismatch is an error, never a silent partial load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.checkpoint import (
    BUNDLE_FORMAT,
    _extract_state_dict,
    _torch_load,
    file_sha256,
    load_into,
)
from compressor.errors import CompressorError


@dataclass(frozen=True)
class StudentInit:
    """What was loaded into the student, for the report."""

    path: str
    sha256: str
    loaded_tensors: int
    reinitialised: list[str]  # classifier keys left random (another class count)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    own = {k: v for k, v in model.state_dict().items()}
    head = _head_keys(own, state)
    merged = {**state, **{k: own[k] for k in head}}
    load_into(model, merged, f"--student-init {path} (for {arch})")
    return StudentInit(str(path), file_sha256(path), len(state) - len(head), head)
