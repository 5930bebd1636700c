"""The single-stage commands: ``select``, ``export``, ``verify``, ``inspect`` and ``profiles``.

Each parses its options and calls the library (:mod:`compressor.pipeline.single_stage` and
friends); the
shared error handling and exit codes are in :mod:`compressor.cli.app`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from compressor.cli.app import app, parse_floats, parse_list, profiles_app, user_errors
from compressor.cli.options import (
    ArchOpt,
    DebugOpt,
    InterpolationOpt,
    ProfileOpt,
    ResizeModeOpt,
    ResizeSizeOpt,
    SelectionMemoryOpt,
    StudentSourceOpt,
    TrustOpt,
)
from compressor.errors import CompressorError


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
    from compressor.pipeline.single_stage import export_student

    with user_errors(debug):
        result = export_student(student, out, opset=opset, profile=profile)
    typer.echo(f"wrote {result.path} (opset {result.opset}, {result.size_bytes / 1024:.0f} KiB)")


@app.command(
    "verify",
    help="Verify an ONNX model on real images with onnxruntime on CPU: accuracy, parity with "
    "the PyTorch reference, latency under a profile, gates. Exit 0 pass, 1 a gate failed, 2 bad "
    "input, 3 inconclusive (a contended host: retry).\n\nExample:\n\n"
    "  compressor verify runs/exp1/student.onnx --data data/ --profile "
    "cpu-1thread --reference runs/exp1/student.pt --teacher teacher.pt --junit gates.xml",
)
def verify_cmd(
    model: Annotated[Path, typer.Argument(help="ONNX model to verify.")],
    data: Annotated[Path, typer.Option(help="ImageFolder root (its test split is used).")],
    profile: ProfileOpt,
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
    trust_checkpoint: TrustOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print verify.json on stdout.")] = False,
    debug: DebugOpt = False,
) -> None:
    from compressor.pipeline.single_stage import verify_model

    with user_errors(debug):
        outcome = verify_model(
            model,
            data,
            profile,
            reference=reference,
            teacher=teacher,
            arch=arch,
            seed=seed,
            mean=parse_floats(mean, "mean"),
            std=parse_floats(std, "std"),
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
        from compressor.report.verify_md import render_verify_markdown

        typer.echo(render_verify_markdown(outcome.result).rstrip())
    raise typer.Exit(outcome.exit_code)


@app.command(
    "inspect",
    help="Show what an ONNX model or a checkpoint holds: format, architecture, classes, input, "
    "parameters, FLOPs, metadata.\n\nExample:\n\n  compressor inspect runs/exp1/student.onnx",
)
def inspect_cmd(
    path: Annotated[Path, typer.Argument(help="An .onnx file or a checkpoint.")],
    arch: Annotated[str | None, typer.Option(help="Architecture of a plain state dict.")] = None,
    trust_checkpoint: TrustOpt = False,
    debug: DebugOpt = False,
) -> None:
    from compressor.pipeline.single_stage import inspect_file

    with user_errors(debug):
        info = inspect_file(path, arch=arch, trust_checkpoint=trust_checkpoint)
    typer.echo(json.dumps(info, indent=2))


@profiles_app.command(
    "list", help="List the bundled profiles.\n\nExample:\n\n  compressor profiles list"
)
def profiles_list(debug: DebugOpt = False) -> None:
    from compressor.latency.profiles import available_profiles, load_profile

    with user_errors(debug):
        for name in available_profiles():
            profile = load_profile(name)
            shape = "x".join(map(str, profile.input_shape))
            cal = f", calibrated for {profile.calibration.device}" if profile.calibration else ""
            typer.echo(
                f"{name:<20} {profile.latency_ms:g} ms at p{profile.percentile:g}, "
                f"batch {profile.batch_size}, {shape}, {profile.intra_op_threads} thread(s)"
                f"{cal}: {profile.description}"
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
    from compressor.latency.profiles import load_profile, resolve_profile_path, schema_markdown

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

    from compressor.latency.profiles import load_profile, resolve_profile_path
    from compressor.selection.target_calibration import calibration_table, write_calibrated_profile
    from compressor.selection.timers import profile_timer

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
    profile: ProfileOpt,
    teacher: Annotated[
        Path | None, typer.Option(help="Teacher checkpoint: gives classes and channels.")
    ] = None,
    arch: ArchOpt = None,
    num_classes: Annotated[
        int | None, typer.Option(help="Number of classes when no teacher is given.")
    ] = None,
    family: Annotated[str | None, typer.Option(help="Student family.")] = None,
    candidates: Annotated[str | None, typer.Option(help="Comma-separated ladder subset.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for selection.json.")] = None,
    student_source: StudentSourceOpt = "auto",
    selection_memory: SelectionMemoryOpt = True,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print selection.json on stdout.")
    ] = False,
    trust_checkpoint: TrustOpt = False,
    debug: DebugOpt = False,
) -> None:
    from compressor.files import write_json_atomic
    from compressor.pipeline.single_stage import select_for_profile
    from compressor.run_folder import RunFolder
    from compressor.selection.table import format_table

    with user_errors(debug):
        selection = select_for_profile(
            profile, teacher=teacher, arch=arch, num_classes=num_classes, family=family,
            candidates=parse_list(candidates), trust_checkpoint=trust_checkpoint,
            log=lambda message: typer.echo(message, err=True), student_source=student_source,
            selection_memory=selection_memory,
        )  # fmt: skip
        if out is not None:
            write_json_atomic(RunFolder(out).selection, selection.to_dict())
    if json_out:
        typer.echo(json.dumps(selection.to_dict(), indent=2))
    else:
        typer.echo(format_table(selection))
        typer.echo(f"chosen: {selection.chosen}")
