"""The ``compressor`` command line: parse, call the library, print, choose the exit code.

Exit codes: 0 every gate passed, 1 a gate failed (the report says which and by how much),
2 bad input or usage (one line on stderr; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from compressor.errors import CompressorError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Distil a PyTorch teacher into an ONNX student that fits a CPU latency budget.\n\n"
    "Exit codes: 0 all gates pass, 1 a gate failed, 2 bad input or usage.",
)

EXAMPLE_RUN = (
    "compressor run --teacher teacher.pt --data data/ --profile cpu-1thread --out runs/exp1"
)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn CompressorError (and Ctrl-C) into one line on stderr and exit code 2."""
    try:
        yield
    except CompressorError as exc:
        if debug:
            traceback.print_exc()
        _fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def _logger(quiet: bool) -> Callable[[str], None]:
    start = time.perf_counter()

    def log(message: str) -> None:
        if not quiet:
            typer.echo(f"[{time.perf_counter() - start:7.1f}s] {message}", err=True)

    return log


def _floats(text: str | None, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        _fail(f"--{name} must be comma-separated numbers, e.g. 0.5,0.5,0.5; got {text!r}")


def print_summary(report: dict[str, Any], out: Path, seconds: float | None = None) -> None:
    """A short human summary on stdout; the latency is the shipped model's."""
    from compressor.report import speedup_summary

    acc, size, prof = report["accuracy"], report["size"], report["profile"]
    shipped = report.get("shipped") or {"latency": report["latency"], "precision": "fp32"}
    lat = shipped["latency"]
    verdict = "PASS" if report["passed"] else "FAIL"
    lines = [
        f"result: {verdict}" + (f" in {seconds:.0f} s" if seconds is not None else ""),
        f"  teacher {report['teacher']['arch']}: top-1 {100 * acc['teacher_top1']:.2f}%  "
        f"({size['teacher_params']:,} params, {size['teacher_mflops']:.1f} MFLOPs)",
        f"  student {report['selection']['chosen']}: top-1 {100 * acc['student_top1']:.2f}%  "
        f"({size['student_params']:,} params, {size['student_mflops']:.1f} MFLOPs)",
        f"  {speedup_summary(report)}",
        f"  latency p{prof['percentile']:g} ({shipped['precision']}, shipped): "
        f"{lat['at_percentile_ms']:.3f} ms (budget {prof['latency_ms']:g} ms, "
        f"batch {lat['batch_size']}, {lat['intra_op_threads']} thread(s))",
    ]
    for gate in report["gates"]:
        lines.append(f"  [{'pass' if gate['passed'] else 'FAIL'}] {gate['name']}: {gate['detail']}")
    lines.append(f"  report: {out / 'report.html'} (and report.md, report.json, student.onnx)")
    typer.echo("\n".join(lines))


DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only print the summary.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        help="Training precision: auto (bf16 on CUDA, fp16 + loss scaling on GPUs without "
        "bf16, fp32 on CPU), fp32, bf16 or fp16."
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile/--no-compile",
        help="torch.compile the training step and the teacher (a minute of compiling first).",
    ),
]
ResizeModeOpt = Annotated[
    str | None,
    typer.Option(
        help="How the teacher's eval transform resizes: center-crop (shorter side to "
        "--resize-size, then the centre), squash or letterbox. Default: what the teacher bundle "
        "or the profile says, else center-crop for inputs >= 64 px and squash below.",
    ),
]
ResizeSizeOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Shorter side before the centre crop (default: input / 0.875)."),
]
InterpolationOpt = Annotated[
    str | None, typer.Option(help="Resampling of the eval transform: bilinear, bicubic, nearest.")
]


DataCacheOpt = Annotated[
    bool,
    typer.Option(
        "--data-cache/--no-data-cache",
        help="Keep decoded images on disk between runs ($COMPRESSOR_CACHE_DIR, default "
        "~/.cache/compressor); rebuilt when any image changes.",
    ),
]

DataStorageOpt = Annotated[
    bool | None,
    typer.Option(
        "--data-in-memory/--data-stream",
        help="Decode every image into memory once (fast; unreadable files are skipped), or "
        "stream batches from disk with worker processes. Default: in memory when the decoded "
        "images fit a quarter of the available RAM, streamed otherwise.",
        show_default=False,
    ),
]


def _storage(in_memory: bool | None) -> str:
    return "auto" if in_memory is None else ("memory" if in_memory else "stream")


@app.command(
    help=f"Run every stage: select, distill, export, verify, report.\n\nExample:\n\n  {EXAMPLE_RUN}"
)
def run(
    out: Annotated[Path, typer.Option(help="Run folder to write.")],
    teacher: Annotated[
        Path | None, typer.Option(help="Teacher checkpoint (bundle or state dict).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="ImageFolder root: train/ + test/ (or val/), or class folders."),
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="Bundled profile name or path to a .toml file.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the run in --out after an interruption: finished stages are kept, "
            "training continues from the last completed epoch; every other option is read "
            "from --out/run.json."
        ),
    ] = False,
    arch: Annotated[
        str | None, typer.Option(help="Architecture of a plain state dict, e.g. resnet18.")
    ] = None,
    family: Annotated[
        str | None, typer.Option(help="Student family (default: chosen from the input size).")
    ] = None,
    candidates: Annotated[
        str | None,
        typer.Option(help="Comma-separated subset of the family's ladder to consider."),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 30,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="Training batch size per process (per GPU under torchrun, where the peak "
            "learning rate is scaled by the number of processes; see docs/throughput.md).",
        ),
    ] = 128,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate (SGD, cosine).")] = 0.05,
    method: Annotated[
        str,
        typer.Option(
            help="Base distillation loss: kd, dkd or ce (no teacher term); or auto: short "
            "pilots of --auto-recipes from the same weights and batches, the best on the "
            "validation split continued to the end (docs/benchmarks.md)."
        ),
    ] = "kd",
    auto_recipes: Annotated[
        str | None,
        typer.Option(
            help="With --method auto: recipes to pilot, from ce, kd, kd+bias, dkd, dkd+bias "
            "[default: ce,kd,kd+bias]."
        ),
    ] = None,
    bias_aware: Annotated[
        bool,
        typer.Option(
            "--bias-aware/--no-bias-aware",
            help="Teacher-bias removal (AAAI 2025); off by default, as it lowered accuracy in "
            "docs/benchmarks.md.",
        ),
    ] = False,
    ce_weight: Annotated[
        float, typer.Option(help="lambda: weight of cross-entropy vs distillation.")
    ] = 0.5,
    temperature: Annotated[float, typer.Option(help="Distillation temperature T.")] = 4.0,
    alpha: Annotated[float, typer.Option(help="DKD target-class weight.")] = 1.0,
    beta: Annotated[float, typer.Option(help="DKD non-target-class weight.")] = 8.0,
    warmup_epochs: Annotated[
        int | None,
        typer.Option(help="DKD warm-up epochs [default: min(20, max(1, epochs // 4))]."),
    ] = None,
    schedule: Annotated[
        str, typer.Option(help="Bias weight b(e): cos2, linear or constant.")
    ] = "cos2",
    rectification: Annotated[
        str, typer.Option(help="Wrong-sample rectification: swap, soft or drop.")
    ] = "swap",
    augment: Annotated[
        bool,
        typer.Option(
            "--augment/--no-augment",
            help="Random crop and flip; without it the teacher's logits are computed once.",
        ),
    ] = True,
    hflip: Annotated[
        bool, typer.Option("--hflip/--no-hflip", help="Random horizontal flips.")
    ] = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: PrecisionOpt = "auto",
    compile_step: CompileOpt = False,
    data_cache: DataCacheOpt = True,
    data_in_memory: DataStorageOpt = None,
    seed: Annotated[int, typer.Option(help="Seed for splits, init and augmentation.")] = 0,
    val_fraction: Annotated[
        float, typer.Option(min=0.01, max=0.5, help="Validation split carved from train.")
    ] = 0.1,
    mean: Annotated[
        str | None, typer.Option(help="Normalisation mean for a state dict, e.g. 0.49,0.48,0.45.")
    ] = None,
    std: Annotated[str | None, typer.Option(help="Normalisation std for a state dict.")] = None,
    resize_mode: ResizeModeOpt = None,
    resize_size: ResizeSizeOpt = None,
    interpolation: InterpolationOpt = None,
    student_init: Annotated[
        Path | None,
        typer.Option(
            help="Pretrained student weights (state dict or bundle of the chosen arch), or a "
            "folder of <arch>.pt files for the ladder; the classifier is re-initialised when the "
            "class count differs."
        ),
    ] = None,
    trust_checkpoint: Annotated[
        bool, typer.Option(help="Allow unpickling arbitrary objects (runs code!).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run folder.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print report.json on stdout.")] = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    from compressor.distill import TrainConfig
    from compressor.losses import LossConfig
    from compressor.pipeline import RunConfig, run_pipeline
    from compressor.recipes import parse_recipes

    started = time.perf_counter()
    with user_errors(debug):
        if resume:
            from compressor.pipeline import load_run_config

            outcome = run_pipeline(load_run_config(out), _logger(quiet or json_out))
            _finish(outcome, json_out, started)
        missing = [
            n for n, v in (("teacher", teacher), ("data", data), ("profile", profile)) if v is None
        ]
        if missing:
            raise CompressorError(
                "missing " + ", ".join(f"--{n}" for n in missing) + f" (see: {EXAMPLE_RUN})"
            )
        assert teacher is not None and data is not None and profile is not None
        pilots = parse_recipes(auto_recipes) if method == "auto" else None
        if auto_recipes is not None and pilots is None:
            raise CompressorError("--auto-recipes needs --method auto")
        try:
            loss = LossConfig(
                method="kd" if pilots else method,
                bias_aware=bias_aware,
                ce_weight=ce_weight,
                temperature=temperature,
                alpha=alpha,
                beta=beta,
                warmup_epochs=warmup_epochs,
                schedule=schedule,
                rectification=rectification,
            )
        except ValueError as exc:
            raise CompressorError(str(exc)) from exc
        train = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            hflip=hflip,
            augment=augment,
            precision=precision,
            compile=compile_step,
        )
        cfg = RunConfig(
            teacher=teacher,
            data=data,
            profile=profile,
            out=out,
            arch=arch,
            family=family,
            candidates=tuple(c.strip() for c in candidates.split(",")) if candidates else None,
            loss=loss,
            train=train,
            val_fraction=val_fraction,
            trust_checkpoint=trust_checkpoint,
            overwrite=overwrite,
            mean=_floats(mean, "mean"),
            std=_floats(std, "std"),
            data_cache=data_cache,
            data_storage=_storage(data_in_memory),
            resize_mode=resize_mode,
            resize_size=resize_size,
            interpolation=interpolation,
            student_init=student_init,
            auto_recipes=pilots,
        )
        outcome = run_pipeline(cfg, _logger(quiet or json_out))
    _finish(outcome, json_out, started)


def _finish(outcome: Any, json_out: bool, started: float) -> NoReturn:
    """Print the run's summary (or its JSON report) and exit with its code."""
    if outcome is None:  # a non-zero torchrun rank: rank 0 reports for the group
        raise typer.Exit(0)
    if json_out:
        typer.echo(json.dumps(outcome.report, indent=2))
    else:
        print_summary(outcome.report, outcome.out, time.perf_counter() - started)
    raise typer.Exit(outcome.exit_code)


@app.command(
    help="Run the whole pipeline on embedded handwritten digits (no arguments, no network)."
    "\n\nExample:\n\n  compressor demo"
)
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's data, teacher and run.")] = Path(
        "runs/demo"
    ),
    epochs: Annotated[int, typer.Option(min=1, help="Student training epochs.")] = 15,
    teacher_epochs: Annotated[int, typer.Option(min=1, help="Teacher training epochs.")] = 12,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print report.json on stdout.")] = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    from compressor.demo import build_digits_imagefolder, train_demo_teacher
    from compressor.distill import TrainConfig
    from compressor.pipeline import RunConfig, run_pipeline

    started = time.perf_counter()
    log = _logger(quiet or json_out)
    with user_errors(debug):
        data = build_digits_imagefolder(out / "data", seed=seed)
        teacher = out / "teacher.pt"
        if not teacher.exists():
            log(f"training the demo teacher ({teacher_epochs} epochs) -> {teacher}")
            train_demo_teacher(data, teacher, epochs=teacher_epochs, seed=seed)
        else:
            log(f"reusing the demo teacher {teacher}")
        cfg = RunConfig(
            teacher=teacher,
            data=data,
            profile="demo",
            out=out / "run",
            train=TrainConfig(epochs=epochs, batch_size=64, lr=0.1, seed=seed, hflip=False),
            overwrite=True,
        )
        outcome = run_pipeline(cfg, log)
    _finish(outcome, json_out, started)


@app.command(
    "distill",
    help="Re-run only the distillation stage in a run folder (its run.json and selection.json), "
    "optionally with other training settings; writes student.pt and distill.json and removes "
    "the now-stale export and reports.\n\nExample:\n\n"
    "  compressor distill --out runs/exp1 --epochs 60 --no-bias-aware",
)
def distill_cmd(
    out: Annotated[Path, typer.Option(help="Run folder written by `compressor run`.")],
    epochs: Annotated[int | None, typer.Option(min=1, help="Training epochs.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Peak learning rate.")] = None,
    method: Annotated[str | None, typer.Option(help="kd, dkd, ce or auto.")] = None,
    bias_aware: Annotated[
        bool | None, typer.Option("--bias-aware/--no-bias-aware", help="Teacher-bias removal.")
    ] = None,
    rectification: Annotated[str | None, typer.Option(help="swap, soft or drop.")] = None,
    schedule: Annotated[str | None, typer.Option(help="cos2, linear or constant.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto, fp32, bf16 or fp16 (see `run --help`).")
    ] = None,
    compile_step: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="torch.compile the step.")
    ] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    import dataclasses

    from compressor.pipeline import distill_stage_only, load_run_config
    from compressor.recipes import parse_recipes

    with user_errors(debug):
        cfg = load_run_config(out)
        if method is not None:  # auto pilots the default recipes, any other method ends auto
            cfg = dataclasses.replace(
                cfg, auto_recipes=parse_recipes(None) if method == "auto" else None
            )
            method = None if method == "auto" else method
        loss_changes: dict[str, Any] = {
            k: v
            for k, v in (("method", method), ("bias_aware", bias_aware),
                         ("rectification", rectification), ("schedule", schedule))
            if v is not None
        }  # fmt: skip
        train_changes: dict[str, Any] = {
            k: v
            for k, v in (("epochs", epochs), ("lr", lr), ("seed", seed), ("device", device),
                         ("precision", precision), ("compile", compile_step))
            if v is not None
        }  # fmt: skip
        try:
            loss = dataclasses.replace(cfg.loss, **loss_changes)
        except ValueError as exc:
            raise CompressorError(str(exc)) from exc
        cfg = dataclasses.replace(
            cfg, loss=loss, train=dataclasses.replace(cfg.train, **train_changes)
        )
        result = distill_stage_only(cfg, _logger(quiet))
    if result is None:  # another rank under torchrun: rank 0 reports
        return
    typer.echo(
        f"distilled: best validation top-1 {100 * result.best_val_top1:.2f}% at epoch "
        f"{result.best_epoch}; wrote {out / 'student.pt'}. Next: compressor export / verify, "
        f"or compressor run --resume --out {out}"
    )


@app.command(
    "export",
    help="Export a student bundle to ONNX (dynamic batch, checked, with metadata).\n\nExample:"
    "\n\n  compressor export --student runs/exp1/student.pt --out student.onnx --opset 18",
)
def export_cmd(
    student: Annotated[Path, typer.Option(help="Student bundle (student.pt from a run).")],
    out: Annotated[Path, typer.Option(help="ONNX file to write.")],
    opset: Annotated[int | None, typer.Option(min=13, max=23, help="ONNX opset.")] = None,
    profile: Annotated[str | None, typer.Option(help="Profile for input shape and opset.")] = None,
    debug: DebugOpt = False,
) -> None:
    from compressor.commands import export_student

    with user_errors(debug):
        result = export_student(student, out, opset=opset, profile=profile)
    typer.echo(f"wrote {result.path} (opset {result.opset}, {result.size_bytes / 1024:.0f} KiB)")


@app.command(
    "verify",
    help="Verify an ONNX model on real images with onnxruntime on CPU: accuracy, parity with "
    "the PyTorch reference, latency under a profile, gates. Exit 0 pass, 1 a gate failed, 2 bad "
    "input.\n\nExample:\n\n  compressor verify runs/exp1/student.onnx --data data/ --profile "
    "cpu-1thread --reference runs/exp1/student.pt --teacher teacher.pt --junit gates.xml",
)
def verify_cmd(
    model: Annotated[Path, typer.Argument(help="ONNX model to verify.")],
    data: Annotated[Path, typer.Option(help="ImageFolder root (its test split is used).")],
    profile: Annotated[str, typer.Option(help="Bundled profile name or path to a .toml file.")],
    reference: Annotated[
        Path | None, typer.Option(help="PyTorch student bundle for the parity check.")
    ] = None,
    teacher: Annotated[Path | None, typer.Option(help="Teacher for accuracy drop.")] = None,
    arch: Annotated[str | None, typer.Option(help="Teacher arch for a plain state dict.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split (as in run).")] = 0,
    mean: Annotated[str | None, typer.Option(help="Override normalisation mean.")] = None,
    std: Annotated[str | None, typer.Option(help="Override normalisation std.")] = None,
    resize_mode: ResizeModeOpt = None,
    resize_size: ResizeSizeOpt = None,
    interpolation: InterpolationOpt = None,
    out: Annotated[Path | None, typer.Option(help="Folder for verify.json and verify.md.")] = None,
    junit: Annotated[
        Path | None, typer.Option(help="Write a JUnit XML file, one case per gate.")
    ] = None,
    trust_checkpoint: Annotated[bool, typer.Option(help="Allow unpickling (runs code!).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print verify.json on stdout.")] = False,
    debug: DebugOpt = False,
) -> None:
    from compressor.commands import verify_model

    with user_errors(debug):
        outcome = verify_model(
            model,
            data,
            profile,
            reference=reference,
            teacher=teacher,
            arch=arch,
            seed=seed,
            mean=_floats(mean, "mean"),
            std=_floats(std, "std"),
            out=out,
            junit=junit,
            trust_checkpoint=trust_checkpoint,
            preprocess={
                "resize_mode": resize_mode,
                "resize_size": resize_size,
                "interpolation": interpolation,
            },
        )
    if json_out:
        typer.echo(json.dumps(outcome.result, indent=2))
    else:
        from compressor.report import render_verify_markdown

        typer.echo(render_verify_markdown(outcome.result).rstrip())
    raise typer.Exit(0 if outcome.passed else 1)


@app.command(
    "inspect",
    help="Show what an ONNX model or a checkpoint holds: format, architecture, classes, input, "
    "parameters, FLOPs, metadata.\n\nExample:\n\n  compressor inspect runs/exp1/student.onnx",
)
def inspect_cmd(
    path: Annotated[Path, typer.Argument(help="An .onnx file or a checkpoint.")],
    arch: Annotated[str | None, typer.Option(help="Architecture of a plain state dict.")] = None,
    trust_checkpoint: Annotated[bool, typer.Option(help="Allow unpickling (runs code!).")] = False,
    debug: DebugOpt = False,
) -> None:
    from compressor.commands import inspect_file

    with user_errors(debug):
        info = inspect_file(path, arch=arch, trust_checkpoint=trust_checkpoint)
    typer.echo(json.dumps(info, indent=2))


profiles_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="List, show and calibrate latency profiles.\n\nExample:\n\n  compressor profiles list",
)
app.add_typer(profiles_app, name="profiles")


@profiles_app.command(
    "list", help="List the bundled profiles.\n\nExample:\n\n  compressor profiles list"
)
def profiles_list(debug: DebugOpt = False) -> None:
    from compressor.profile import available_profiles, load_profile

    with user_errors(debug):
        for name in available_profiles():
            p = load_profile(name)
            shape = "x".join(map(str, p.input_shape))
            cal = f", calibrated for {p.calibration.device}" if p.calibration else ""
            typer.echo(
                f"{name:<20} {p.latency_ms:g} ms at p{p.percentile:g}, batch {p.batch_size}, "
                f"{shape}, {p.intra_op_threads} thread(s){cal}: {p.description}"
            )


@profiles_app.command(
    "show",
    help="Print a profile's file and its validated values, or the schema with --schema."
    "\n\nExamples:\n\n  compressor profiles show cpu-1thread"
    "\n\n  compressor profiles show --schema",
)
def profiles_show(
    name: Annotated[
        str | None, typer.Argument(help="Bundled name or path to a .toml file.")
    ] = None,
    schema: Annotated[bool, typer.Option(help="Print every allowed key instead.")] = False,
    debug: DebugOpt = False,
) -> None:
    from compressor.profile import load_profile, resolve_profile_path, schema_markdown

    with user_errors(debug):
        if schema:
            typer.echo(schema_markdown())
            return
        if name is None:
            raise CompressorError("give a profile name or --schema")
        profile = load_profile(name)
        typer.echo(resolve_profile_path(name).read_text(encoding="utf-8").rstrip())
        typer.echo("\n# validated:")
        typer.echo(json.dumps(profile.to_dict(), indent=2))


@profiles_app.command(
    "calibrate",
    help="Run ON THE TARGET DEVICE: time the reference suite under a profile's settings and "
    "write a new profile whose [calibration] table lets selection on another machine predict "
    "latencies on this one.\n\nExample:\n\n"
    "  compressor profiles calibrate --profile cpu-1thread --out my-board.toml --device 'Pi 5'",
)
def profiles_calibrate(
    profile: Annotated[str, typer.Option(help="Profile to calibrate (name or path).")],
    out: Annotated[Path, typer.Option(help="Where to write the calibrated profile (.toml).")],
    device: Annotated[str, typer.Option(help="Name of this target device.")] = "",
    name: Annotated[str | None, typer.Option(help="Name of the new profile.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
    debug: DebugOpt = False,
) -> None:
    import platform

    from compressor.calibrate import calibration_table, write_calibrated_profile
    from compressor.profile import load_profile, resolve_profile_path
    from compressor.select import profile_timer

    with user_errors(debug):
        base = load_profile(profile)
        if out.exists() and not overwrite:
            raise CompressorError(f"{out} exists; pass --overwrite to replace it")
        if out.suffix != ".toml":
            raise CompressorError(f"--out must end in .toml, got {out}")
        table = calibration_table(base, profile_timer(base), device or platform.node())
        for model, mflops, ms in zip(table.models, table.mflops, table.target_ms, strict=True):
            typer.echo(f"  {model:<26} {mflops:10.1f} MFLOPs  {ms:8.3f} ms at p{base.percentile:g}")
        write_calibrated_profile(resolve_profile_path(profile), out, name or out.stem, table)
        typer.echo(f"wrote {out}")


@app.command(
    "select",
    help="Time the student ladder under a profile and choose the largest candidate that fits; "
    "writes selection.json.\n\nExample:\n\n"
    "  compressor select --teacher teacher.pt --profile cpu-1thread --out runs/exp1",
)
def select_cmd(
    profile: Annotated[str, typer.Option(help="Bundled profile name or path to a .toml file.")],
    teacher: Annotated[
        Path | None, typer.Option(help="Teacher checkpoint: gives classes and channels.")
    ] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture of a plain state dict.")] = None,
    num_classes: Annotated[
        int | None, typer.Option(help="Number of classes when no teacher is given.")
    ] = None,
    family: Annotated[str | None, typer.Option(help="Student family.")] = None,
    candidates: Annotated[str | None, typer.Option(help="Comma-separated ladder subset.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for selection.json.")] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print selection.json on stdout.")
    ] = False,
    trust_checkpoint: Annotated[bool, typer.Option(help="Allow unpickling (runs code!).")] = False,
    debug: DebugOpt = False,
) -> None:
    from compressor.checkpoint import load_bundle
    from compressor.io import write_json_atomic
    from compressor.pipeline import shipped_graph
    from compressor.profile import load_profile
    from compressor.select import choose_student, format_table, select_student
    from compressor.students import default_family, families_to_try

    with user_errors(debug):
        prof = load_profile(profile)
        hw = (prof.input_shape[1], prof.input_shape[2])
        subset = tuple(c.strip() for c in candidates.split(",")) if candidates else None
        if teacher is not None:
            bundle = load_bundle(teacher, arch=arch, trust_checkpoint=trust_checkpoint)
            if bundle.in_channels != prof.input_shape[0]:
                raise CompressorError(
                    f"teacher expects {bundle.in_channels}-channel input but profile "
                    f"'{prof.name}' has {prof.input_shape[0]} channel(s)"
                )
            selection = choose_student(
                prof, bundle.model, bundle.arch, bundle.num_classes,
                families_to_try(family, bool(subset), bundle.arch, hw),
                candidates=subset, to_shipped=shipped_graph(prof),
                log=lambda m: typer.echo(m, err=True),
            )  # fmt: skip
        elif num_classes is not None:
            selection = select_student(
                prof, num_classes, family or default_family(hw), candidates=subset,
                to_shipped=shipped_graph(prof),
            )  # fmt: skip
        else:
            raise CompressorError(
                "give --teacher (or --num-classes) so students get the right head"
            )
        if out is not None:
            write_json_atomic(out / "selection.json", selection.to_dict())
    if json_out:
        typer.echo(json.dumps(selection.to_dict(), indent=2))
    else:
        typer.echo(format_table(selection))
        typer.echo(f"chosen: {selection.chosen}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except Exception:  # a bug, not bad input: keep the traceback, exit 3
        traceback.print_exc()
        sys.exit(3)
