"""Latency profiles: TOML files that say what the student must meet on which CPU target.

A profile is validated against :data:`SCHEMA`, a table of every allowed key with its type,
range and default. Unknown keys, wrong types and out-of-range values raise
:class:`~compressor.errors.CompressorError` naming the file, the key and what is allowed, because
a silently ignored typo in a budget is exactly what a CI job must not accept.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError

PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"


@dataclass(frozen=True)
class Key:
    """One allowed key of the schema: its type, bounds or choices, default and meaning."""

    kind: type
    default: Any = None  # None means required
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""
    optional: bool = False  # may be absent with no default (None)
    item: type | None = None  # element type of a list

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind is list and self.item is int:
            return "a list of 3 positive integers [channels, height, width]"
        if self.kind is list and self.item is str:
            return "a list of strings"
        if self.kind is list:
            return "a list of numbers >= 0" if self.low == 0 else "a list of positive numbers"
        if self.kind is str:
            return "a string"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        name = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
        return f"{name.get(self.kind, self.kind.__name__)} in [{lo}, {hi}]"


SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "name": Key(str, help="short identifier shown in reports"),
        "description": Key(str, default="", help="what deployment this profile models"),
    },
    "input": {
        "shape": Key(list, item=int, help="[channels, height, width] of one input image"),
        "batch_size": Key(int, default=1, low=1, high=4096, help="images per inference call"),
    },
    "runtime": {
        "intra_op_threads": Key(int, default=1, low=1, high=256, help="onnxruntime intra-op"),
        "inter_op_threads": Key(int, default=1, low=1, high=256, help="onnxruntime inter-op"),
        "execution_mode": Key(str, default="sequential", choices=("sequential", "parallel")),
        "graph_optimization": Key(
            str, default="all", choices=("disable", "basic", "extended", "all")
        ),
    },
    "budget": {
        "latency_ms": Key(float, low=1e-6, high=1e7, help="budget for one batch, milliseconds"),
        "percentile": Key(float, default=90.0, low=1.0, high=99.9, help="percentile judged"),
        "safety_margin": Key(
            float, default=0.10, low=0.0, high=0.9, help="selection aims at budget*(1-margin)"
        ),
        "warmup_runs": Key(int, default=10, low=0, high=100000),
        "min_iterations": Key(int, default=100, low=10, high=10_000_000),
        "min_seconds": Key(float, default=1.0, low=0.0, high=3600.0),
        "min_speedup": Key(
            float,
            default=1.5,
            low=1.0,
            high=1000.0,
            help="a student must be this many times faster than the teacher (measured)",
        ),
    },
    # The eval transform the teacher was trained with (compressor.data.preprocess). A bundle's own
    # record and the CLI flags take precedence; "auto" / 0 / absent means "not stated here".
    "preprocess": {
        "resize_mode": Key(
            str,
            default="auto",
            choices=("auto", "center-crop", "squash", "letterbox"),
            help="auto: center-crop for inputs >= 64 px, squash below",
        ),
        "resize_size": Key(
            int, default=0, low=0, high=65536, help="shorter side before the crop; 0: size/0.875"
        ),
        "interpolation": Key(
            str, default="bilinear", choices=("nearest", "bilinear", "bicubic"), help="resampling"
        ),
        "mean": Key(list, item=float, optional=True, low=0.0, help="per-channel mean (0-1 scale)"),
        "std": Key(list, item=float, optional=True, help="per-channel std (0-1 scale)"),
        "train_scale": Key(
            list,
            item=float,
            default=[0.25, 1.0],
            help="RandomResizedCrop area range for training (inputs >= 64 px)",
        ),
    },
    "gates": {
        "max_top1_drop": Key(
            float, low=0.0, high=1.0, help="max (teacher - student) top-1, as a fraction"
        ),
        "min_top1": Key(float, default=0.0, low=0.0, high=1.0, help="absolute floor on top-1"),
        "min_agreement": Key(
            float, default=0.995, low=0.0, high=1.0, help="ONNX vs PyTorch top-1 agreement"
        ),
        "max_abs_logit_diff": Key(
            float, default=1e-3, low=0.0, high=1e6, help="ONNX vs PyTorch max |logit diff|"
        ),
    },
    "export": {
        "opset": Key(int, default=18, low=13, high=23, help="ONNX opset version"),
        "quantization": Key(str, default="none", choices=("none", "int8")),
    },
    # Written by `compressor profiles calibrate` on the target device; see
    # compressor.selection.target_calibration.
    "calibration": {
        "device": Key(str, default="", help="what the target device is"),
        "measured_utc": Key(str, default="", help="when the suite was timed on the target"),
        "suite_version": Key(int, default=1, low=1, high=1000, help="reference suite version"),
        "models": Key(list, item=str, help="reference suite model names"),
        "mflops": Key(list, item=float, help="MFLOPs of each suite model"),
        "target_ms": Key(list, item=float, help="latency of each on the target, at percentile"),
    },
}
OPTIONAL_TABLES = ("calibration",)


@dataclass(frozen=True)
class Calibration:
    """Latencies of the reference suite measured on the target device."""

    device: str
    measured_utc: str
    suite_version: int
    models: tuple[str, ...]
    mflops: tuple[float, ...]
    target_ms: tuple[float, ...]


@dataclass(frozen=True)
class LatencyProfile:
    """A validated profile. Field groups mirror the TOML tables."""

    name: str
    description: str
    input_shape: tuple[int, int, int]
    batch_size: int
    intra_op_threads: int
    inter_op_threads: int
    execution_mode: str
    graph_optimization: str
    latency_ms: float
    percentile: float
    safety_margin: float
    warmup_runs: int
    min_iterations: int
    min_seconds: float
    max_top1_drop: float
    min_top1: float
    min_agreement: float
    max_abs_logit_diff: float
    opset: int
    quantization: str
    min_speedup: float = 1.5
    resize_mode: str = "auto"
    resize_size: int = 0
    interpolation: str = "bilinear"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    train_scale: tuple[float, ...] = (0.25, 1.0)
    calibration: Calibration | None = None
    source: str = field(default="", compare=False)

    @property
    def target_ms(self) -> float:
        """The latency selection aims for: the budget less the safety margin."""
        return self.latency_ms * (1.0 - self.safety_margin)

    @property
    def target_speedup(self) -> float:
        """The speedup selection aims for: ``min_speedup`` with the same safety margin.

        Selection ships the candidate nearest the bar, so without a margin a later timing of
        the same student lands below it about half the time (a 0.91x mobilenet_v3_small chosen
        at 1.57x measured 1.49x at the end of its run, docs/pruning.md). Rounded to 4 decimals
        because it is also recorded (selection.json) and part of the selection memory's key.
        """
        return round(self.min_speedup / (1.0 - self.safety_margin), 4)

    def preprocess_layer(self) -> dict[str, Any]:
        """The [preprocess] keys this profile states (for compressor.data.preprocess.resolve)."""
        return {
            "resize_mode": self.resize_mode,
            "resize_size": self.resize_size,
            "interpolation": self.interpolation,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for reports (JSON-serialisable)."""
        from dataclasses import asdict

        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        return out


def _check_value(where: str, key: str, spec: Key, value: Any) -> Any:
    def bad(msg: str) -> CompressorError:
        return CompressorError(f"{where}: key '{key}' {msg}; allowed: {spec.describe()}")

    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.kind is list and spec.item is not int:
        shortest = 1 if spec.optional else 2  # mean/std of a 1-channel input have one entry
        if not isinstance(value, list) or len(value) < shortest:
            raise bad(f"is {value!r}, not a list of at least {shortest} entries")
        if spec.item is float:
            low = spec.low

            def fine(v: Any) -> bool:
                number = isinstance(v, int | float) and not isinstance(v, bool)
                return number and (v >= low if low is not None else v > 0)

            if not all(fine(v) for v in value):
                raise bad(f"is {value!r}")
            return tuple(float(v) for v in value)
        if not all(isinstance(v, str) for v in value):
            raise bad(f"is {value!r}")
        return tuple(value)
    if spec.kind is list:
        if (
            not isinstance(value, list)
            or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise bad(f"is {value!r}")
        if value[0] not in (1, 3):
            raise bad(f"has {value[0]} channels (only 1 or 3 are supported)")
        return tuple(value)
    if not isinstance(value, spec.kind) or (spec.kind is int and isinstance(value, bool)):
        raise bad(f"has type {type(value).__name__}")
    if spec.choices and value not in spec.choices:
        raise bad(f"is {value!r}")
    number: Any = value
    if (spec.low is not None and number < spec.low) or (
        spec.high is not None and number > spec.high
    ):
        raise bad(f"is {value!r}, out of range")
    return value


def profile_from_dict(data: dict[str, Any], source: str) -> LatencyProfile:
    """Validate a parsed TOML document against :data:`SCHEMA` and build the profile."""
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    tables[""] = {k: v for k, v in data.items() if not isinstance(v, dict)}
    values: dict[str, Any] = {}
    for section, table in tables.items():
        if section not in SCHEMA:
            allowed = ", ".join(f"[{s}]" for s in SCHEMA if s)
            raise CompressorError(f"{source}: unknown table [{section}]; allowed: {allowed}")
        for key in table:
            if key not in SCHEMA[section]:
                near = difflib.get_close_matches(key, list(SCHEMA[section]), n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                label = f"{section}.{key}" if section else key
                allowed = ", ".join(SCHEMA[section])
                raise CompressorError(f"{source}: unknown key '{label}'{hint}; allowed: {allowed}")
    calibration = None
    if "calibration" in tables:
        cal = {
            key: _check_value(source, f"calibration.{key}", spec, tables["calibration"][key])
            if key in tables["calibration"]
            else spec.default
            for key, spec in SCHEMA["calibration"].items()
        }
        for key in ("models", "mflops", "target_ms"):
            if cal[key] is None:
                raise CompressorError(f"{source}: missing required key 'calibration.{key}'")
        if not len(cal["models"]) == len(cal["mflops"]) == len(cal["target_ms"]):
            raise CompressorError(
                f"{source}: calibration.models, .mflops and .target_ms must have equal lengths"
            )
        calibration = Calibration(**cal)
    for section, keys in SCHEMA.items():
        if section in OPTIONAL_TABLES:
            continue
        table = tables.get(section, {})
        for key, spec in keys.items():
            label = f"{section}.{key}" if section else key
            if key in table:
                values[key] = _check_value(source, label, spec, table[key])
            elif spec.default is None and not spec.optional:
                raise CompressorError(f"{source}: missing required key '{label}' ({spec.help})")
            else:
                values[key] = spec.default
    shape = values.pop("shape")
    _check_preprocess(values, shape, source)
    return LatencyProfile(input_shape=shape, source=source, calibration=calibration, **values)


def _check_preprocess(values: dict[str, Any], shape: tuple[int, int, int], source: str) -> None:
    """Cross-key checks of [preprocess]: list lengths, the crop range, a reachable input size."""
    from compressor.data.preprocess import check_spec, default_resize_mode

    scale = values["train_scale"] = tuple(values["train_scale"])
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise CompressorError(
            f"{source}: key 'preprocess.train_scale' is {list(scale)}; allowed: [low, high] "
            "with 0 < low <= high <= 1"
        )
    for key in ("mean", "std"):
        if values[key] is not None and len(values[key]) != shape[0]:
            raise CompressorError(
                f"{source}: key 'preprocess.{key}' has {len(values[key])} value(s) but "
                f"input.shape has {shape[0]} channel(s)"
            )
    mode = values["resize_mode"]
    try:
        check_spec(
            default_resize_mode(shape[1:]) if mode == "auto" else mode,
            values["interpolation"],
            values["resize_size"] or None,
            (shape[1], shape[2]),
        )
    except CompressorError as exc:
        raise CompressorError(f"{source}: [preprocess] {exc}") from exc


def available_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def resolve_profile_path(name_or_path: str) -> Path:
    """A path to a TOML file, or the name of a bundled profile."""
    candidate = Path(name_or_path)
    looks_like_path = candidate.suffix == ".toml" or "/" in name_or_path or candidate.is_file()
    if looks_like_path:
        if not candidate.is_file():
            raise CompressorError(f"profile file not found: {candidate}")
        return candidate
    bundled = PROFILES_DIR / f"{name_or_path}.toml"
    if bundled.is_file():
        return bundled
    names = available_profiles()
    near = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    raise CompressorError(
        f"unknown profile '{name_or_path}'{hint} "
        f"(bundled: {', '.join(names)}; or pass a .toml path)"
    )


def load_profile(name_or_path: str) -> LatencyProfile:
    """Load and validate a profile by bundled name or by path."""
    path = resolve_profile_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CompressorError(f"cannot read profile {path}: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CompressorError(f"{path}: not valid TOML: {exc}") from exc
    return profile_from_dict(data, str(path))


def schema_markdown() -> str:
    """The schema as a Markdown table (used by docs and ``compressor profiles show --schema``)."""
    lines = ["| key | allowed | default | meaning |", "| --- | --- | --- | --- |"]
    for section, keys in SCHEMA.items():
        for key, spec in keys.items():
            label = f"{section}.{key}" if section else key
            default = "required" if spec.default is None else repr(spec.default)
            default = "not set" if spec.optional else default
            lines.append(f"| `{label}` | {spec.describe()} | {default} | {spec.help} |")
    return "\n".join(lines)
