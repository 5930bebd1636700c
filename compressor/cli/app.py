"""The Typer application, and what every command shares: one-line errors, logging, exit codes.

The exit codes are defined once, in :mod:`compressor.errors` (the README's table lists them).
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer

from compressor.errors import (
    EXIT_BAD_INPUT,
    EXIT_INCONCLUSIVE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CompressorError,
    LatencyInconclusive,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Distil a PyTorch teacher into an ONNX student that fits a CPU latency budget.\n\n"
    "Exit codes: 0 all gates pass, 1 a gate failed, 2 bad input or usage, 3 a latency decision "
    "was inconclusive because the host was contended (retry when it is idle).",
)

EXAMPLE_RUN = (
    "compressor run --teacher teacher.pt --data data/ --profile cpu-1thread --out runs/exp1"
)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn CompressorError (and Ctrl-C) into one line on stderr and exit code 2."""
    try:
        yield
    except CompressorError as exc:
        if debug:
            traceback.print_exc()
        fail(
            str(exc), EXIT_INCONCLUSIVE if isinstance(exc, LatencyInconclusive) else EXIT_BAD_INPUT
        )
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def logger(quiet: bool) -> Callable[[str], None]:
    start = time.perf_counter()

    def log(message: str) -> None:
        if not quiet:
            typer.echo(f"[{time.perf_counter() - start:7.1f}s] {message}", err=True)

    return log


def parse_floats(text: str | None, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        fail(f"--{name} must be comma-separated numbers, e.g. 0.5,0.5,0.5; got {text!r}")


def print_summary(report: dict[str, Any], out: Path, seconds: float | None = None) -> None:
    """A short human summary on stdout; the latency is the shipped model's."""
    from compressor.report.markdown import gate_status, run_verdict, speedup_summary
    from compressor.run_folder import RunFolder

    acc, size, prof = report["accuracy"], report["size"], report["profile"]
    shipped = report.get("shipped") or {"latency": report["latency"], "precision": "fp32"}
    lat = shipped["latency"]
    verdict = run_verdict(report)
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
        lines.append(f"  [{gate_status(gate)}] {gate['name']}: {gate['detail']}")
    folder = RunFolder(out)
    lines.append(
        f"  report: {folder.report_html} (and {folder.report_md.name}, "
        f"{folder.report_json.name}, {folder.onnx.name})"
    )
    typer.echo("\n".join(lines))


def finish(outcome: Any, json_out: bool, started: float) -> NoReturn:
    """Print the run's summary (or its JSON report) and exit with its code."""
    if outcome is None:  # a non-zero torchrun rank: rank 0 reports for the group
        raise typer.Exit(EXIT_OK)
    report = outcome.report.to_dict()
    if json_out:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_summary(report, outcome.out, time.perf_counter() - started)
    raise typer.Exit(outcome.exit_code)


profiles_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="List, show and calibrate latency profiles.\n\nExample:\n\n  compressor profiles list",
)
app.add_typer(profiles_app, name="profiles")


def parse_list(text: str | None) -> tuple[str, ...] | None:
    """``a, b,c`` -> ``("a", "b", "c")``; None or empty stays None."""
    return tuple(item.strip() for item in text.split(",")) if text else None
