"""Library side of the single-stage commands: ``select``, ``export``, ``verify``, ``inspect``.

Each reads and writes the same artifacts as ``compressor run`` (student bundle, student.onnx,
verify.json), so one stage can be re-run on its own, for example ``verify`` in a CI job on a
model produced elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from compressor.data.preprocess import Preprocess, resolve_preprocess
from compressor.data.splits import load_image_folder
from compressor.errors import CompressorError
from compressor.export.int8 import shipped_graph
from compressor.export.to_onnx import ExportResult, export_onnx, model_metadata, read_metadata
from compressor.export.verify import verify_onnx
from compressor.files import write_json_atomic, write_text_atomic
from compressor.latency.cpu import channel_block
from compressor.latency.profiles import LatencyProfile, load_profile
from compressor.models.checkpoint import ModelBundle, load_bundle
from compressor.models.pruning import plan_student_source
from compressor.models.registry import count_flops, count_params, default_family, families_to_try
from compressor.pipeline.input_checks import check_channels, check_classes, check_input_shape
from compressor.report.junit import junit_xml
from compressor.report.verify_md import render_verify_markdown
from compressor.run_folder import RunFolder
from compressor.selection.choose import select_student
from compressor.selection.memory import default_memory_path
from compressor.selection.sources import choose_student
from compressor.selection.table import Selection


def export_student(
    student: Path, out: Path, *, opset: int | None = None, profile: str | None = None
) -> ExportResult:
    """Export a student (or any bundle) to ONNX with the same metadata ``run`` writes."""
    bundle = load_bundle(student)
    prof = load_profile(profile) if profile else None
    if prof is not None:
        shape = prof.input_shape
    elif bundle.input_size is not None:
        shape = (bundle.in_channels, *bundle.input_size)
    else:
        raise CompressorError(f"{student} records no input size: pass --profile")
    if shape[0] != bundle.in_channels:
        raise CompressorError(
            f"{student} takes {bundle.in_channels} channel(s), the profile has {shape[0]}"
        )
    return export_bundle(bundle, shape, out, prof, opset)


def export_bundle(
    bundle: ModelBundle,
    shape: tuple[int, ...],
    out: Path,
    profile: LatencyProfile | None,
    opset: int | None = None,
) -> ExportResult:
    """The one ONNX export of a student: dynamic batch, checked, with its metadata (classes,
    eval transform, provenance) taken from the bundle."""
    return export_onnx(
        bundle.model,
        shape,  # type: ignore[arg-type]
        out,
        opset=opset or (profile.opset if profile else 18),
        metadata=model_metadata(
            class_names=bundle.class_names or [str(i) for i in range(bundle.num_classes)],
            preprocess=_bundle_preprocess(bundle, shape).to_metadata(),
            input_shape=shape,
            arch=bundle.arch,
            profile=profile.name if profile else bundle.extra.get("profile", ""),
            teacher_sha256=bundle.extra.get("teacher_sha256", ""),
            student_source=student_source(bundle),
        ),
    )


def student_source(bundle: ModelBundle) -> str:
    """What the student is, in words: "pruned: resnet50 width-pruned to 0.42x MACs" or
    "fresh: <arch>" (a ladder architecture trained from its own initialisation)."""
    if bundle.pruning:
        return f"pruned: {bundle.pruning.get('description', bundle.arch)}"
    return f"fresh: {bundle.arch}"


def select_for_profile(
    profile_name: str,
    *,
    teacher: Path | None = None,
    arch: str | None = None,
    num_classes: int | None = None,
    family: str | None = None,
    candidates: tuple[str, ...] | None = None,
    trust_checkpoint: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
    student_source: str = "auto",
    selection_memory: bool = True,
) -> Selection:
    """``compressor select``: time the ladder and choose, for a teacher or a class count.

    With a teacher, candidates must also beat its measured speed (``min_speedup``) and the
    family follows it, and its width-pruned copies are candidates too (``student_source``);
    with only ``num_classes``, the profile's input size picks the family.
    """
    profile = load_profile(profile_name)
    height_width = (profile.input_shape[1], profile.input_shape[2])
    if teacher is not None:
        bundle = load_bundle(teacher, arch=arch, trust_checkpoint=trust_checkpoint)
        check_channels("teacher", bundle.in_channels, profile)
        families = families_to_try(family, bool(candidates), bundle.arch, height_width)
        plan = plan_student_source(
            student_source,
            bundle,
            profile.input_shape,
            ladder_named=bool(family or candidates),
            round_to=channel_block(),
        )
        return choose_student(
            profile, bundle.model, bundle.arch, bundle.num_classes, families,
            candidates=candidates, to_shipped=shipped_graph(profile), log=log, plan=plan,
            memory_path=default_memory_path() if selection_memory else None,
        )  # fmt: skip
    if num_classes is None:
        raise CompressorError("give --teacher (or --num-classes) so students get the right head")
    return select_student(
        profile, num_classes, family or default_family(height_width), candidates=candidates,
        to_shipped=shipped_graph(profile),
    )  # fmt: skip


def _bundle_preprocess(bundle: ModelBundle, shape: tuple[int, ...]) -> Preprocess:
    """The bundle's recorded eval transform at ``shape`` (older bundles: the size default)."""
    return resolve_preprocess(
        (shape[1], shape[2]), shape[0], bundle.mean, bundle.std, bundle.preprocess
    )


def verify_preprocess(
    meta: dict[str, Any],
    profile: LatencyProfile,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    stated: dict[str, Any],
) -> Preprocess:
    """The transform ``verify`` feeds the model: flags, then the ONNX metadata, then the profile.

    Files exported before the transform was recorded carry only mean/std; they were fed
    squashed images, which is what ``resize_mode`` defaults to for them.
    """
    recorded = meta.get("preprocess") if isinstance(meta.get("preprocess"), dict) else None
    legacy = None if recorded or "mean" not in meta else {"resize_mode": "squash"}
    mean = mean or tuple(meta.get("mean") or ()) or profile.mean
    std = std or tuple(meta.get("std") or ()) or profile.std
    if not mean or not std:
        raise CompressorError("the model has no mean/std metadata: pass --mean and --std")
    channels, height, width = profile.input_shape
    return resolve_preprocess(
        (height, width), channels, mean, std, stated, recorded, legacy, profile.preprocess_layer()
    )


def load_onnx_model(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise CompressorError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises several types for a corrupt file
        raise CompressorError(
            f"{path} is not a readable ONNX model ({type(exc).__name__})"
        ) from exc


@dataclass
class VerifyOutcome:
    result: dict[str, Any]
    passed: bool
    exit_code: int = 0


def verify_model(
    model_path: Path,
    data: Path,
    profile_name: str,
    *,
    reference: Path | None = None,
    teacher: Path | None = None,
    arch: str | None = None,
    seed: int = 0,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    out: Path | None = None,
    junit: Path | None = None,
    trust_checkpoint: bool = False,
    preprocess: dict[str, Any] | None = None,
) -> VerifyOutcome:
    """Verify an ONNX file on real images under a profile; optionally write reports.

    Images are fed through the eval transform recorded in the file's metadata (``preprocess``
    flags override it), so a model is verified the way it was trained and will be deployed.
    """
    proto = load_onnx_model(model_path)
    meta = read_metadata(proto)
    profile: LatencyProfile = load_profile(profile_name)
    try:
        spec = verify_preprocess(meta, profile, mean, std, preprocess or {})
    except CompressorError as exc:
        raise CompressorError(f"{model_path}: {exc}") from exc
    mean, std = spec.mean, spec.std
    check_input_shape(str(model_path), meta.get("input_shape"), profile)
    splits = load_image_folder(
        data, profile.input_shape, seed=seed, preprocess=spec, storage="auto"
    )
    classes = meta.get("class_names")
    if classes:
        check_classes("model", len(classes), classes, splits.class_names, str(data))
    ref_model = (
        load_bundle(reference, trust_checkpoint=trust_checkpoint).model if reference else None
    )
    teacher_model = (
        load_bundle(teacher, arch=arch, trust_checkpoint=trust_checkpoint, mean=mean, std=std).model
        if teacher
        else None
    )
    report = verify_onnx(
        model_path, splits.test, mean, std, profile, reference=ref_model, teacher=teacher_model
    )
    result = {
        "model": str(model_path),
        "profile": profile.to_dict(),
        "test_source": splits.test_source,
        "preprocess": spec.to_metadata(),
        "skipped_files": len(splits.skipped),
        **report.to_dict(),
    }
    if out is not None:
        write_json_atomic(RunFolder(out).verify_record, result)
        write_text_atomic(RunFolder(out).verify_md, render_verify_markdown(result))
    if junit is not None:
        write_text_atomic(junit, junit_xml(result["gates"]))
    return VerifyOutcome(result=result, passed=report.passed, exit_code=report.exit_code)


def inspect_file(
    path: Path, *, arch: str | None = None, trust_checkpoint: bool = False
) -> dict[str, Any]:
    """What is in an ONNX model or a checkpoint: format, architecture, classes, size, FLOPs."""
    if not path.exists():
        raise CompressorError(f"file not found: {path}")
    if path.suffix == ".onnx":
        proto = load_onnx_model(path)
        graph = proto.graph

        def dims(value: onnx.ValueInfoProto) -> list[int | str]:
            return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

        return {
            "format": "onnx",
            "opset": max(
                (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None
            ),
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "inputs": {v.name: dims(v) for v in graph.input},
            "outputs": {v.name: dims(v) for v in graph.output},
            "nodes": len(graph.node),
            "quantized": any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in graph.node),
            "size_bytes": path.stat().st_size,
            "metadata": read_metadata(proto),
        }
    bundle = load_bundle(path, arch=arch, trust_checkpoint=trust_checkpoint)
    info = bundle.describe()
    if bundle.input_size:
        shape = (bundle.in_channels, *bundle.input_size)
        info["mflops"] = count_flops(bundle.model, shape) / 1e6  # type: ignore[arg-type]
    info["params"] = count_params(bundle.model)
    info["extra"] = bundle.extra
    return info
