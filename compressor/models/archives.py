"""Teachers saved as code-carrying archives: TorchScript files and ``torch.export`` programs.

Neither format is unpickled as Python objects (TorchScript runs only TorchScript operators, an
exported program is a graph plus tensors), so both load without ``--trust-checkpoint``. The
architecture is read from the graph itself: input channels from the first convolution, classes
from the last matrix in the weights.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from compressor.errors import CompressorError


def archive_kind(path: Path) -> str | None:
    """ "torchscript", "export" or None (a regular ``torch.save`` file or not a zip)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("/archive_format") for n in names):
        return "export"
    if any("/code/" in n for n in names):
        return "torchscript"
    return None


class FrozenGraph(nn.Module):
    """Wraps a graph module that must not be switched between train and eval mode."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def train(self, mode: bool = True) -> FrozenGraph:
        self.training = mode  # the wrapped graph was captured in eval mode and stays so
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


def load_torchscript(path: Path) -> nn.Module:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise CompressorError(f"{path} is not a loadable TorchScript file ({exc})") from exc
    return module.eval()


def load_exported_program(path: Path) -> tuple[nn.Module, tuple[int, ...] | None]:
    """The program as a module, and its example input shape (C, H, W) when recorded."""
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # the deserializer raises many types for a damaged archive
        raise CompressorError(f"{path} is not a loadable torch.export program ({exc})") from exc
    shape = None
    if program.example_inputs and program.example_inputs[0]:
        example = program.example_inputs[0][0]
        shape = tuple(int(d) for d in example.shape[1:])
        batch = int(example.shape[0])
        module = program.module()
        try:
            module(torch.zeros(batch + 1, *shape))
        except Exception as exc:
            raise CompressorError(
                f"{path} was exported with a fixed batch size of {batch}; re-export it with a "
                "dynamic batch: torch.export.export(model, (x,), "
                "dynamic_shapes=({0: torch.export.Dim('batch')},))"
            ) from exc
        return FrozenGraph(module), shape
    return FrozenGraph(program.module()), shape
