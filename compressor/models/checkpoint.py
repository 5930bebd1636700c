"""Loading (and saving) model checkpoints safely.

Supported formats:

* **bundle** - compressor's self-describing dict (architecture name, classes, input size,
  normalisation, state dict). Written by :func:`save_bundle`; students are saved the same way.
* **state dict** - a plain ``{name: tensor}`` mapping (or a training-script dict holding one under
  ``state_dict``/``model``, with DataParallel's ``module.`` prefix stripped) plus ``--arch``.

Everything loads with ``torch.load(weights_only=True)``: unpickling arbitrary objects runs code,
so a checkpoint that needs it is refused unless the caller passes ``trust_checkpoint=True``.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.errors import CompressorError
from compressor.files import atomic_write
from compressor.models.archives import archive_kind, load_exported_program, load_torchscript
from compressor.models.registry import build_model, known_arch
from compressor.models.squeeze_excitation import drop_squeeze_excitation
from compressor.models.widths import apply_widths

BUNDLE_FORMAT = "compressor.bundle/v1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelBundle:
    """A loaded model and what is needed to feed it: (N, C, H, W) floats -> (N, classes) logits."""

    model: nn.Module
    arch: str
    num_classes: int
    in_channels: int
    input_size: tuple[int, int] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] | None
    sha256: str
    format: str
    path: str
    extra: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] | None = None  # the eval transform a bundle records
    pruning: dict[str, Any] | None = None  # a derived student: base arch and per-layer widths

    def describe(self) -> dict[str, Any]:
        """JSON-ready metadata (no tensors) for reports and ``inspect``."""
        return {
            "path": self.path,
            "format": self.format,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "input_size": list(self.input_size) if self.input_size else None,
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": self.class_names,
            "sha256": self.sha256,
            "params": sum(p.numel() for p in self.model.parameters()),
            "preprocess": self.preprocess,
            "pruning": _pruning_summary(self.pruning),
        }


def _pruning_summary(pruning: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The pruning record without the per-layer widths (for reports and ``inspect``)."""
    if not pruning:
        return None
    return {k: v for k, v in pruning.items() if k != "widths"} | {
        "layers_recorded": len(pruning.get("widths") or {})
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_bundle(
    path: Path,
    model: nn.Module,
    arch: str,
    *,
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str] | None,
    extra: Mapping[str, Any] | None = None,
    preprocess: Mapping[str, Any] | None = None,
    pruning: Mapping[str, Any] | None = None,
) -> Path:
    """Write a self-describing checkpoint atomically. Loadable with ``weights_only=True``.

    ``preprocess`` is the eval transform (:meth:`compressor.data.preprocess.Preprocess.to_metadata`)
    so that whoever loads the model feeds it the way it was trained. ``pruning`` is a derived
    student's record (:meth:`compressor.models.pruning.DerivedPoint.record`): ``arch`` is then the
    teacher architecture it was pruned from, rebuilt with the recorded per-layer widths.
    """
    payload = {
        "format": BUNDLE_FORMAT,
        "arch": arch,
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "input_size": [int(input_size[0]), int(input_size[1])],
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "class_names": list(class_names) if class_names is not None else None,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
        "preprocess": dict(preprocess) if preprocess else None,
    }
    if pruning:
        payload["pruning"] = dict(pruning)
    return atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def _torch_load(path: Path, trust_checkpoint: bool) -> Any:
    if not path.exists():
        raise CompressorError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CompressorError(f"checkpoint is not a file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CompressorError(
                f"{path} contains pickled Python objects ({found.group(1)}), and unpickling runs "
                "code: refusing to load it. If you trust its origin, pass --trust-checkpoint; "
                "better, re-save it as a state dict (torch.save(model.state_dict(), 'teacher.pt'))"
                " and pass --arch"
            ) from exc
        raise CompressorError(f"{path} is not a readable PyTorch checkpoint ({exc})") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompressorError(f"{path} is not a readable PyTorch checkpoint ({first})") from exc


def _extract_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """Find the state dict in what training scripts commonly save."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = dict(obj)
        else:
            for key in ("state_dict", "model_state_dict", "model", "net", "ema"):
                inner = obj.get(key)
                if isinstance(inner, Mapping) and inner:
                    return _extract_state_dict(inner)
            return None
        if all(k.startswith("module.") for k in state):
            state = {k[len("module.") :]: v for k, v in state.items()}
        return state
    return None


def _classifier_outputs(state: Mapping[str, torch.Tensor]) -> int | None:
    """Number of classes: rows of the last 2-D weight (the classifier) in the state dict."""
    outputs = [v.shape[0] for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return int(outputs[-1]) if outputs else None


def _first_conv_channels(state: Mapping[str, torch.Tensor]) -> int:
    convs = [v.shape[1] for k, v in state.items() if k.endswith("weight") and v.ndim == 4]
    return int(convs[0]) if convs else 3


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict`` with an error that names missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:

        def head(items: list[str]) -> str:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            return ", ".join(items[:3]) + more

        parts = []
        if missing:
            parts.append(f"missing keys: {head(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {head(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch: {head(shapes)}")
        raise CompressorError(f"{what} does not match its architecture; " + "; ".join(parts))
    model.load_state_dict(state)


def load_bundle(
    path: Path,
    *,
    arch: str | None = None,
    trust_checkpoint: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ModelBundle:
    """Load a teacher (or student) checkpoint in any supported format, in eval mode on CPU."""
    path = Path(path)
    kind = archive_kind(path) if path.is_file() else None
    if kind is not None:
        return _from_archive(path, kind, arch, mean, std)
    obj = _torch_load(path, trust_checkpoint)
    sha = file_sha256(path)
    if isinstance(obj, Mapping) and obj.get("format") == BUNDLE_FORMAT:
        return _from_bundle(obj, path, sha, arch)
    if isinstance(obj, nn.Module):  # only reachable with trust_checkpoint
        if arch is None:
            arch = type(obj).__name__
        module_state = obj.state_dict()
        obj.eval()
        return _finish(
            obj,
            arch,
            _classifier_outputs(module_state) or 0,
            _first_conv_channels(module_state),
            path,
            sha,
            "pickled-module",
            mean,
            std,
        )
    state = _extract_state_dict(obj)
    if state is None:
        raise CompressorError(
            f"{path}: no state dict found (expected a compressor bundle, a state dict, or a dict "
            "with a 'state_dict' or 'model' entry)"
        )
    if arch is None:
        raise CompressorError(
            f"{path} is a plain state dict: pass --arch with its architecture (e.g. resnet18)"
        )
    if not known_arch(arch):
        build_model(arch, 1)  # raises the registry's "unknown architecture" message
    num_classes = _classifier_outputs(state)
    if num_classes is None:
        raise CompressorError(f"{path}: cannot find a classifier layer in the state dict")
    in_channels = _first_conv_channels(state)
    model = build_model(arch, num_classes, in_channels)
    load_into(model, state, f"{path} (state dict for --arch {arch})")
    return _finish(model.eval(), arch, num_classes, in_channels, path, sha, "state-dict", mean, std)


def _from_archive(
    path: Path,
    kind: str,
    arch: str | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> ModelBundle:
    """TorchScript or torch.export teacher: architecture read from its weights."""
    if kind == "torchscript":
        model, shape = load_torchscript(path), None
    else:
        model, shape = load_exported_program(path)
    state = model.state_dict()
    num_classes = _classifier_outputs(state)
    if num_classes is None:
        raise CompressorError(f"{path}: cannot find a classifier layer in the {kind} model")
    in_channels = shape[0] if shape else _first_conv_channels(state)
    bundle = _finish(
        model,
        arch or kind,
        num_classes,
        in_channels,
        path,
        file_sha256(path),
        "torchscript" if kind == "torchscript" else "torch-export",
        mean,
        std,
    )
    if shape and len(shape) == 3:
        bundle.input_size = (shape[1], shape[2])
    return bundle


def _finish(
    model: nn.Module,
    arch: str,
    num_classes: int,
    in_channels: int,
    path: Path,
    sha: str,
    fmt: str,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> ModelBundle:
    default_mean = IMAGENET_MEAN if in_channels == 3 else (0.5,)
    default_std = IMAGENET_STD if in_channels == 3 else (0.5,)
    return ModelBundle(
        model=model,
        arch=arch,
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=None,
        mean=tuple(mean) if mean else default_mean,
        std=tuple(std) if std else default_std,
        class_names=None,
        sha256=sha,
        format=fmt,
        path=str(path),
    )


def _from_bundle(obj: Mapping[str, Any], path: Path, sha: str, arch: str | None) -> ModelBundle:
    required = ("arch", "num_classes", "in_channels", "mean", "std", "state_dict")
    absent = [k for k in required if k not in obj]
    if absent:
        raise CompressorError(f"{path}: bundle is missing {', '.join(absent)}")
    if arch is not None and arch != obj["arch"]:
        raise CompressorError(f"{path}: --arch {arch} contradicts the bundle's arch {obj['arch']}")
    model = build_model(obj["arch"], int(obj["num_classes"]), int(obj["in_channels"]))
    pruning = obj.get("pruning")
    what = f"{path} (bundle of {obj['arch']})"
    if pruning is not None:
        if not isinstance(pruning, Mapping) or not isinstance(pruning.get("widths"), Mapping):
            raise CompressorError(f"{path}: the bundle's pruning record has no per-layer widths")
        removed = pruning.get("removed_squeeze_excitation") or []
        if not isinstance(removed, (list, tuple)):
            raise CompressorError(f"{path}: the pruning record's removed blocks are not a list")
        drop_squeeze_excitation(model, removed)
        apply_widths(model, pruning["widths"], obj["state_dict"])
        what = f"{path} (bundle of {obj['arch']}, pruned as recorded)"
    load_into(model, obj["state_dict"], what)
    size = obj.get("input_size")
    return ModelBundle(
        model=model.eval(),
        arch=str(obj["arch"]),
        num_classes=int(obj["num_classes"]),
        in_channels=int(obj["in_channels"]),
        input_size=(int(size[0]), int(size[1])) if size else None,
        mean=tuple(float(m) for m in obj["mean"]),
        std=tuple(float(s) for s in obj["std"]),
        class_names=list(obj["class_names"]) if obj.get("class_names") else None,
        sha256=sha,
        format="bundle",
        path=str(path),
        extra=dict(obj.get("extra") or {}),
        preprocess=dict(obj["preprocess"]) if isinstance(obj.get("preprocess"), Mapping) else None,
        pruning=dict(pruning) if pruning else None,
    )
