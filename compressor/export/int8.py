"""Int8 static quantization of an exported student with onnxruntime, and whether to keep it.

Static (calibrated) QDQ quantization is what onnxruntime recommends for CNNs on CPU: its CPU
provider fuses DequantizeLinear -> Conv -> QuantizeLinear into integer kernels. Whether that is
*faster* depends on the CPU (VNNI, threads, batch) and whether it is *accurate enough* on the
model, so int8 is only a candidate: :func:`decide_int8` keeps it only when it proves both.
"""

from __future__ import annotations

import json
import platform
import tempfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime import quantization as ortq
from onnxruntime.quantization.shape_inference import quant_pre_process

from compressor.errors import CompressorError
from compressor.export.verify import VerifyReport, top1_drop_of
from compressor.files import atomic_write
from compressor.latency.cpu import cpu_flags
from compressor.latency.paired import PairedTiming
from compressor.latency.profiles import LatencyProfile
from compressor.latency.timing import LatencyStats

CALIBRATION_BATCH = 32  # images per calibration run; MinMax ranges do not depend on it
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # x86 flags with int32-accumulating u8*s8
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512bw", *VNNI_FLAGS, "asimddp", "i8mm")


@dataclass(frozen=True)
class TypeChoice:
    """Activation/weight types and ``reduce_range`` for one CPU, with the reason in words."""

    activation_type: str  # "QUInt8" or "QInt8"
    weight_type: str
    reduce_range: bool
    choice_reason: str


@dataclass(frozen=True)
class QuantizeResult:
    """The written int8 model and every setting that produced it (goes into the report)."""

    path: str
    size_bytes: int
    preprocessed: bool  # quant_pre_process ran (BatchNorm folded, shapes inferred)
    preprocess_note: str
    qdq_nodes: int  # QuantizeLinear + DequantizeLinear nodes in the written model
    activation_type: str
    weight_type: str
    per_channel: bool
    reduce_range: bool
    calibration_count: int
    calibrate_method: str
    quant_format: str
    cpu_flags: list[str]  # the relevant flags found, e.g. ["avx2", "avx512_vnni"]
    choice_reason: str  # which CPU rule picked the types, e.g. "x86 with avx512_vnni: ..."

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Int8Decision:
    """Keep int8 or fp32, why, and the numbers that decided it."""

    use_int8: bool
    reason: str
    fp32_ms: float
    int8_ms: float
    fp32_top1: float
    int8_top1: float
    speedup_ci: list[float] | None = None  # int8 over fp32, timed interleaved
    inconclusive: bool = False  # the speed question could not be decided (contended host)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_types(flags: Collection[str], machine: str) -> TypeChoice:
    """Pick types as onnxruntime's ``quantize_static`` docs advise for CPU inference.

    On x86 the int8 kernels multiply u8 activations by s8 weights (U8S8). Without VNNI the AVX2 /
    AVX-512BW path (``vpmaddubsw``) sums pairs into int16 and can saturate, so weights are kept to
    7 bits (``reduce_range``); VNNI (``vpdpbusd``) accumulates into int32 and needs no reduction.
    ARM kernels prefer symmetric s8 activations. An unknown CPU gets the safe x86 setting.
    """
    machine = machine.lower()
    if machine in ("aarch64", "arm64"):
        return TypeChoice("QInt8", "QInt8", False, f"{machine}: symmetric S8S8 suits ARM kernels")
    if vnni := "/".join(sorted(set(flags) & set(VNNI_FLAGS))):
        return TypeChoice("QUInt8", "QInt8", False, f"x86 with {vnni}: U8S8, no saturation risk")
    what = "x86 without VNNI" if flags else f"unknown CPU ({machine or 'no cpuinfo'})"
    return TypeChoice("QUInt8", "QInt8", True, f"{what}: U8S8, 7-bit weights avoid saturation")


class _ArrayReader(ortq.CalibrationDataReader):
    """Feeds a float32 (N, C, H, W) array to the calibrator in fixed-size batches (views)."""

    def __init__(self, name: str, data: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self._feeds = [{name: data[i : i + batch]} for i in range(0, data.shape[0], batch)]
        self._iter: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._feeds)


def _check_calibration(calibration: np.ndarray, model: onnx.ModelProto) -> np.ndarray:
    """A clear error for data the calibrator would choke on (or silently mis-calibrate with)."""
    if not isinstance(calibration, np.ndarray) or calibration.ndim != 4:
        shape = getattr(calibration, "shape", type(calibration).__name__)
        raise CompressorError(f"calibration must be a 4-D (N, C, H, W) array, got {shape}")
    if calibration.shape[0] == 0:
        raise CompressorError("calibration set is empty: int8 needs a few hundred training images")
    dims = model.graph.input[0].type.tensor_type.shape.dim[1:]
    expected = tuple(d.dim_value or None for d in dims)  # 0/None: symbolic dimension
    got = calibration.shape[1:]
    if len(expected) != 3 or any(e not in (None, g) for e, g in zip(expected, got, strict=True)):
        raise CompressorError(f"calibration images are {got} but the model expects {expected}")
    data = np.ascontiguousarray(calibration, dtype=np.float32)
    if not np.isfinite(data).all():
        raise CompressorError("calibration data contains NaN or infinite values")
    return data


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    calibration: np.ndarray,
    *,
    per_channel: bool = True,
    target_flags: Collection[str] | None = None,
    machine: str | None = None,
) -> QuantizeResult:
    """Statically quantize ``fp32_path`` (QDQ, MinMax calibration) and write ``out_path``.

    Args:
        fp32_path: exported fp32 ONNX model (input name from the graph, dynamic batch).
        out_path: where the int8 model goes; written atomically, so a failure leaves nothing.
        calibration: float32 (N, C, H, W), normalised exactly as at inference; a few hundred
            training images (never test images, or the reported accuracy is optimistic).
        per_channel: one weight scale per output channel; keeps accuracy for ResNet-style convs
            whose channel ranges differ a lot, at a small speed cost.
        target_flags: CPU flags of the deployment target; defaults to this machine's, because
            the right ``reduce_range`` depends on where the model runs, not where it is built.
        machine: architecture name of the target (``platform.machine()`` by default).

    Raises:
        CompressorError: missing model, unusable calibration data, or quantization failure.
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    try:
        source = onnx.load(str(fp32_path))
    except Exception as exc:  # OSError, protobuf DecodeError and friends
        raise CompressorError(f"cannot read ONNX model {fp32_path}: {exc}") from exc
    data = _check_calibration(calibration, source)
    flags = set(cpu_flags() if target_flags is None else target_flags)
    choice = choose_types(flags, platform.machine() if machine is None else machine)

    with tempfile.TemporaryDirectory(prefix="compressor-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:  # folds BatchNorm into Conv and fixes shapes, so the quantizer sees final weights
            quant_pre_process(str(fp32_path), str(pre))
            model_in, note = pre, "ok"
        except Exception as exc:  # any failure here is recoverable: quantize the raw export
            model_in, note = fp32_path, f"pre-processing skipped: {type(exc).__name__}: {exc}"
        quantized = Path(tmp) / "int8.onnx"
        try:
            ortq.quantize_static(
                str(model_in),
                str(quantized),
                _ArrayReader(source.graph.input[0].name, data),
                quant_format=ortq.QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=choice.reduce_range,
                activation_type=ortq.QuantType[choice.activation_type],
                weight_type=ortq.QuantType[choice.weight_type],
                calibrate_method=ortq.CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": choice.activation_type == "QInt8"},
            )
            proto = onnx.load(str(quantized))
            onnx.checker.check_model(proto)
        except Exception as exc:  # onnxruntime raises many types; all mean "cannot quantize"
            raise CompressorError(f"int8 quantization of {fp32_path} failed: {exc}") from exc

    settings: dict[str, Any] = {
        **asdict(choice),
        "per_channel": per_channel,
        "calibration_count": int(data.shape[0]),
        "calibrate_method": "MinMax",
        "quant_format": "QDQ",
        "cpu_flags": sorted(flags & set(RELEVANT_FLAGS)),
    }
    meta = {p.key: p.value for p in source.metadata_props}  # the export's metadata travels on
    meta.update({"quantization": "int8", "quantization_settings": json.dumps(settings)})
    onnx.helper.set_model_props(proto, meta)
    blob = proto.SerializeToString()
    atomic_write(out_path, lambda p: p.write_bytes(blob))
    qdq = sum(int(n.op_type in ("QuantizeLinear", "DequantizeLinear")) for n in proto.graph.node)
    return QuantizeResult(str(out_path), len(blob), note == "ok", note[:500], qdq, **settings)


def decide_int8(
    fp32: VerifyReport,
    int8: VerifyReport,
    max_top1_drop: float,
    latencies: tuple[LatencyStats, LatencyStats] | None = None,
    paired: PairedTiming | None = None,
) -> Int8Decision:
    """Keep int8 only if it is faster at the profile's percentile and inside the accuracy gate.

    ``paired`` (fp32 as the reference, int8 as the candidate, timed interleaved by
    :func:`~compressor.latency.paired.measure_paired`) decides the speed question when given:
    int8 must be faster beyond the ratio's confidence interval, and a contended measurement
    keeps fp32 and marks the decision inconclusive. Otherwise ``latencies`` (fp32, int8) or the
    two verifications' latencies decide, by their percentiles alone.

    The accuracy gate is relative to the teacher when the reports carry its top-1 (the same gate
    the fp32 student must pass), else relative to the fp32 student. Anything unmeasurable (NaN)
    or a latency comparison at different percentiles/batch sizes keeps fp32: int8 must prove itself.
    """
    if paired is not None:
        latencies = (paired.reference, paired.candidate)
    f_lat, i_lat = latencies if latencies is not None else (fp32.latency, int8.latency)
    f_ms, i_ms = f_lat.at_percentile_ms, i_lat.at_percentile_ms
    f_top, i_top = fp32.student_top1, int8.student_top1
    ms = f"p{f_lat.percentile:g} {i_ms:.3f} ms vs fp32 {f_ms:.3f} ms"
    teacher = int8.teacher_top1 if int8.teacher_top1 is not None else fp32.teacher_top1
    ref_name, ref = ("teacher", teacher) if teacher is not None else ("fp32", f_top)
    drop = top1_drop_of(ref, i_top, int8.images)
    problems = []
    setup = [(lat.percentile, lat.batch_size) for lat in (f_lat, i_lat)]
    if setup[0] != setup[1]:
        problems.append(f"latencies measured at different (percentile, batch): {setup}")
    elif paired is not None and paired.contended:
        problems.append(
            f"int8's speed is inconclusive: the host was contended while timing it against fp32 "
            f"(CPU share {paired.cpu.cpu_share:.0%})"
        )
    elif paired is not None and paired.verdict(1.0) != "above":
        problems.append(f"int8 is not faster beyond noise ({ms}, {paired.describe()})")
    elif not i_ms < f_ms:  # also true when either is NaN
        problems.append(f"int8 is not faster ({ms})")
    accuracy = f"int8 top-1 {i_top:.4f} is {100 * drop:.2f} points below the {ref_name}'s {ref:.4f}"
    gate = f"{100 * max_top1_drop:.2f}-point gate"
    if not drop <= max_top1_drop:
        problems.append(f"{accuracy}, over the {gate}")
    speed = f"{ms} ({f_ms / max(i_ms, 1e-12):.2f}x faster)"
    if paired is not None:
        speed = f"{ms} ({paired.describe()} faster)"
    reason = (
        f"kept fp32: {'; '.join(problems)}."
        if problems
        else f"kept int8: {speed} and {accuracy}, within the {gate}."
    )
    ci = [paired.ci_low, paired.ci_high] if paired is not None else None
    contended = paired is not None and paired.contended
    return Int8Decision(not problems, reason, f_ms, i_ms, f_top, i_top, ci, contended)


def int8_for_timing(fp32: bytes, input_shape: tuple[int, int, int], seed: int = 0) -> bytes:
    """The int8 graph selection times for an (untrained) candidate.

    Latency depends on the graph's operators and shapes, not on the calibrated ranges, so a few
    random images calibrate it; the shipped student is calibrated on real training images.
    """
    calibration = np.random.default_rng(seed).standard_normal((8, *input_shape)).astype("float32")
    with tempfile.TemporaryDirectory(prefix="compressor-select-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_int8(src, dst, calibration)
        return dst.read_bytes()


def shipped_graph(profile: LatencyProfile) -> Callable[[bytes], bytes] | None:
    """How selection turns a candidate's fp32 graph into the graph that ships: int8 for int8
    profiles (timed as shipped), unchanged (None) otherwise."""
    if profile.quantization != "int8":
        return None
    return lambda graph: int8_for_timing(graph, profile.input_shape)
