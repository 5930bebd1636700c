"""Where a number was measured: versions, hardware, seed and command (report.json
``provenance``), so every result can be traced to the machine and software that made it."""

from __future__ import annotations

import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from compressor import __version__


def versions() -> dict[str, str]:
    """Versions of Python, the package and the libraries whose behaviour the numbers depend on."""
    out = {"python": sys.version.split()[0], "compressor": __version__}
    # torch-pruning by its distribution metadata: 1.6.1 still reports __version__ "1.6.0"
    for pkg in ("torch", "torchvision", "onnx", "onnxruntime", "numpy", "torch-pruning"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def hardware() -> dict[str, Any]:
    import os

    import torch

    from compressor.latency.cpu import cpu_model

    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def provenance(seed: int, command: list[str] | None = None) -> dict[str, Any]:
    return {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else sys.argv,
        "seed": seed,
        "versions": versions(),
        "hardware": hardware(),
    }
