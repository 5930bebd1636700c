"""ONNX export with a dynamic batch axis, full checking, shape inference and metadata.

The exported file is written atomically; a model that fails ``onnx.checker`` never reaches the
run folder. Metadata travels inside the model so a deployed file says what it expects.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from compressor import __version__
from compressor.errors import CompressorError
from compressor.files import atomic_write

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ExportResult:
    path: str
    opset: int
    size_bytes: int
    metadata: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "opset": self.opset,
            "size_bytes": self.size_bytes,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportResult:
        """Inverse of :meth:`to_dict` (export.json, read back on ``--resume``)."""
        return cls(str(data["path"]), int(data["opset"]), int(data["size_bytes"]),
                   dict(data["metadata"]))  # fmt: skip


def onnx_bytes(model: nn.Module, input_shape: tuple[int, int, int], opset: int) -> bytes:
    """Export ``model`` (eval mode, CPU) to serialized ONNX with a dynamic batch dimension."""
    model = model.eval().cpu()
    sample = torch.zeros(2, *input_shape)  # batch 2 so the exporter cannot specialise on 1
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model,
                (sample,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many types; all mean "cannot export"
            raise CompressorError(f"ONNX export failed: {str(exc).splitlines()[0]}") from exc
    if program is None:
        raise CompressorError("ONNX export returned no program")
    proto = program.model_proto
    return proto.SerializeToString()


def model_metadata(
    *,
    class_names: list[str],
    preprocess: dict[str, Any],
    input_shape: tuple[int, ...],
    arch: str,
    profile: str,
    teacher_sha256: str,
    student_source: str = "",
) -> dict[str, Any]:
    """What a deployed file says about itself: classes, the eval transform, provenance.

    ``mean``/``std`` stay as top-level keys (the first metadata format) next to the full
    ``preprocess`` description.
    """
    return {
        "class_names": class_names,
        "mean": list(preprocess["mean"]),
        "std": list(preprocess["std"]),
        "preprocess": preprocess,
        "input_layout": "NCHW",
        "input_shape": list(input_shape),
        "arch": arch,
        "student_source": student_source,
        "profile": profile,
        "teacher_sha256": teacher_sha256,
        "compressor_version": __version__,
    }


def add_metadata(proto: onnx.ModelProto, metadata: Mapping[str, Any]) -> None:
    """Store metadata as string properties; non-strings are JSON-encoded."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)


def read_metadata(model: onnx.ModelProto | Path) -> dict[str, Any]:
    """Metadata properties of an ONNX model (or file), JSON-decoded where they are JSON: the
    inverse of :func:`add_metadata`, and the one reader of them."""
    if isinstance(model, Path):
        model = onnx.load(str(model), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[prop.key] = prop.value
    return out


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    path: Path,
    *,
    opset: int,
    metadata: Mapping[str, Any],
) -> ExportResult:
    """Export, check (``full_check``), infer shapes, attach metadata, write atomically."""
    proto = onnx.load_from_string(onnx_bytes(model, input_shape, opset))
    add_metadata(proto, metadata)
    proto.producer_name = "compressor"
    proto.producer_version = __version__
    try:
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise CompressorError(f"exported ONNX model failed the checker: {exc}") from exc
    data = proto.SerializeToString()
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))
    return ExportResult(
        path=str(path),
        opset=opset,
        size_bytes=len(data),
        metadata={p.key: p.value for p in proto.metadata_props},
    )
