"""The training checkpoint (``train_state.pt``): everything a resumed run needs, in one type.

Written atomically after every epoch and read back on ``--resume``, so a resumed CPU run
gives the same weights as an uninterrupted one. The file is a plain dict of tensors, numbers
and lists (loaded with ``weights_only=True``); its keys are the field names below, so files
written before this type existed still load.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from compressor.errors import CompressorError
from compressor.files import atomic_write

StateDict = dict[str, Any]


@dataclass(kw_only=True)
class TrainState:
    """The state after ``epoch`` finished epochs (fields in the file's key order).

    Attributes:
        epoch: epochs finished (the next epoch's 0-based index).
        student: the student's ``state_dict`` now.
        optimizer: the optimiser's ``state_dict``.
        scheduler: the learning-rate scheduler's ``state_dict``.
        scaler: the fp16 gradient scaler's ``state_dict`` (empty when it is off).
        shuffle_rng: the state of the generator that shuffles every epoch.
        world_size: processes that trained it (the batch per step and the schedule depend on it).
        best_state: the student's ``state_dict`` at its best validation epoch so far.
        best_val: that epoch's validation top-1 (-1 before any epoch).
        best_epoch: that epoch, 1-based (-1 before any epoch).
        history: one row per finished epoch.
    """

    epoch: int
    student: StateDict
    optimizer: StateDict
    scheduler: StateDict
    scaler: StateDict = field(default_factory=dict)  # absent from the oldest files
    shuffle_rng: torch.Tensor
    world_size: int = 1  # absent from files written before distributed training
    best_state: StateDict
    best_val: float
    best_epoch: int
    history: list[dict[str, Any]]

    def save(self, path: Path) -> None:
        """Write the state to ``path`` atomically (a torn file never replaces a good one)."""
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        atomic_write(path, lambda tmp: torch.save(raw, tmp))

    @classmethod
    def load(cls, path: Path) -> TrainState:
        """Read a state written by :meth:`save`; a torn or foreign file is a ``CompressorError``."""
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            names = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in raw.items() if k in names})
        except Exception as exc:  # say what is wrong instead of a traceback
            raise CompressorError(f"cannot resume from {path}: {exc}") from exc
