"""The three report files of a run, written together from one dict, each atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compressor.files import write_json_atomic, write_text_atomic
from compressor.report.html_page import render_html
from compressor.report.markdown import render_markdown
from compressor.run_folder import RunFolder

SCHEMA_VERSION = 1  # report.json's; docs/report.md documents each version's keys


def write_report(out: Path, report: dict[str, Any]) -> tuple[Path, Path, Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` atomically into the run folder."""
    report = {"schema_version": SCHEMA_VERSION, **report}
    folder = RunFolder(out)
    return (
        write_json_atomic(folder.report_json, report),
        write_text_atomic(folder.report_md, render_markdown(report)),
        write_text_atomic(folder.report_html, render_html(report)),
    )
