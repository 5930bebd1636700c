"""report.html: one self-contained, escaped, well-formed page that survives missing fields."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from compressor.report.html_page import render_html

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}
SECTIONS = ("summary", "verification", "gates", "accuracy", "parity", "latency", "size")
SECTIONS += ("selection", "distillation", "bias", "provenance")
EVIL = "<script>alert(1)</script>"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def full_report() -> dict[str, Any]:
    """A small report with every key report.json (schema 1) has, plus the optional extras."""
    classes = ["zero", "one", "two"]
    history = [
        {
            "epoch": e,
            "loss": 1.2 / e,
            "ce": 1.0 / e,
            "distill": 0.5 / e,
            "right": 0.3 / e,
            "rectified": 12.0,
            "b": 1.0 - e / 4,
            "lr": 0.1,
            "train_top1": 0.5 + e / 10,
            "val_top1": 0.45 + e / 10,
            "teacher_wrong_fraction": 0.1,
            "teacher_wrong_per_class": [0.1, 0.05, 0.15],
            "seconds": 1.0,
        }
        for e in (1, 2, 3)
    ]
    gate = {"passed": True, "value": 0.9, "threshold": 0.5, "comparison": ">=", "detail": "ok"}
    cand = {"params": 1000, "p50_ms": 0.1, "p90_ms": 0.12, "at_percentile_ms": 0.12}
    return {
        "schema_version": 1,
        "passed": False,
        "exit_code": 1,
        "failed_gates": ["latency_p90"],
        "teacher": {
            "arch": "resnet8",
            "path": "/t/teacher.pt",
            "format": "bundle",
            "sha256": "ab" * 32,
        },
        "profile": {
            "name": "tiny",
            "description": "tests",
            "latency_ms": 1.0,
            "percentile": 90.0,
            "max_top1_drop": 0.05,
            "min_top1": 0.0,
            "min_agreement": 0.99,
            "max_abs_logit_diff": 0.001,
            "source": "/p/tiny.toml",
        },
        "data": {"class_names": classes, "test_source": "held-out test folder"},
        "selection": {
            "family": "mobilenet",
            "chosen": "s1",
            "budget_ms": 1.0,
            "target_ms": 0.8,
            "percentile": 90.0,
            "calibrated_for": "pi5",
            "candidates": [
                {**cand, "name": "s0", "mflops": 1.0, "predicted_ms": 0.3, "fits": True},
                {**cand, "name": "s1", "mflops": 10.0, "predicted_ms": 0.7, "fits": True},
                {
                    **cand,
                    "name": "s2",
                    "mflops": 100.0,
                    "p90_ms": 2.0,
                    "at_percentile_ms": 2.0,
                    "predicted_ms": 3.0,
                    "fits": False,
                },
                {
                    "name": "s3",
                    "params": 9,
                    "mflops": 900.0,
                    "p50_ms": None,
                    "p90_ms": None,
                    "at_percentile_ms": None,
                    "predicted_ms": None,
                    "fits": None,
                },
            ],
        },
        "distillation": {
            "loss": {
                "method": "kd",
                "bias_aware": True,
                "ce_weight": 0.5,
                "temperature": 4.0,
                "schedule": "linear",
                "rectification": "swap",
            },
            "train": {"epochs": 3},
            "device": "cpu",
            "best_epoch": 3,
            "best_val_top1": 0.75,
            "teacher_val_top1": 0.8,
            "seconds": 3.0,
            "history": history,
        },
        "bias": {
            "teacher_train_error": 0.1,
            "teacher_train_error_per_class": dict(zip(classes, [0.1, 0.05, 0.15], strict=True)),
            "teacher_confusion": [[90, 4, 6], [2, 95, 3], [10, 5, 85]],
        },
        "accuracy": {
            "images": 100,
            "teacher_top1": 0.8,
            "student_top1": 0.78,
            "student_top5": 0.99,
            "top1_drop": 0.02,
        },
        "parity": {
            "max_abs_logit_diff": 1e-5,
            "mean_abs_logit_diff": 1e-6,
            "top1_agreement": 1.0,
            "images": 100,
        },
        "latency": {
            "p50_ms": 0.5,
            "p90_ms": 0.6,
            "p99_ms": 0.9,
            "mean_ms": 0.52,
            "std_ms": 0.05,
            "at_percentile_ms": 0.6,
            "percentile": 90.0,
            "iterations": 200,
            "cold_start_ms": 12.0,
            "batch_size": 1,
            "intra_op_threads": 1,
            "repeats_at_percentile_ms": [0.6, 0.61, 0.62],
            "spread": 0.03,
            "predicted_target_ms": 1.2,
            "budget_utilisation": 1.2,
        },
        "gates": [
            {**gate, "name": "min_top1"},
            {**gate, "name": "latency_p90", "passed": False, "detail": "1.2 ms > 1 ms"},
        ],
        "size": {
            "teacher_params": 78000,
            "student_params": 1000,
            "param_ratio": 78.0,
            "teacher_mflops": 12.0,
            "student_mflops": 1.0,
            "onnx_bytes": 40960,
        },
        "provenance": {
            "created_utc": "2025-01-01T00:00:00+00:00",
            "command": ["compressor", "run", "--out", "my run"],
            "seed": 0,
            "versions": {"python": "3.11", "compressor": "0.1.0"},
            "hardware": {"platform": "Linux", "cpu": "x86", "cpu_count": 4, "cuda": None},
        },
        "int8": {"size_bytes": 12000, "top1": 0.77, "settings": {"per_channel": True}},
        "warnings": ["teacher input size differs"],
    }


class StrictParser(HTMLParser):
    """Records ids, tag counts and any unbalanced or mis-nested tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: list[str] = []
        self.tags: dict[str, int] = {}

    def _seen(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.ids += [v for k, v in attrs if k == "id" and v]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._seen(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._seen(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def parse(page: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert parser.stack == [], f"unclosed: {parser.stack}"
    assert len(parser.ids) == len(set(parser.ids)), "duplicate ids"
    assert "could not be rendered" not in page
    return parser


def assert_self_contained(page: str) -> None:
    """Nothing fetched from anywhere: no scripts, links, imports, url() or remote addresses."""
    lowered = page.lower()
    for needle in ("<script", "<link", "<img", "<iframe", "@import", "url(", "javascript:"):
        assert needle not in lowered, needle
    assert not re.search(r"\b(src|href|srcset|xlink:href)\s*=", lowered)
    # the only address is the SVG namespace, an identifier that browsers never fetch
    assert set(re.findall(r"(?:https?:)?//[^\s\"'<>]*", page)) <= {"http://www.w3.org/2000/svg"}


def test_full_report_is_well_formed_with_every_section() -> None:
    page = render_html(full_report())
    assert page.startswith("<!DOCTYPE html>")
    parser = parse(page)
    for sid in (*SECTIONS, "confusion", "int8", "warnings"):
        assert sid in parser.ids, sid
    # selection scatter, three training charts and the per-class bars
    assert parser.tags.get("svg", 0) == 5
    assert parser.tags.get("style") == 1 and parser.tags.get("polygon", 0) >= 3  # predicted
    assert_self_contained(page)
    assert "FAIL" in page and "latency_p90" in page and "1.2 ms &gt; 1 ms" in page
    assert "ab" * 32 in page and "compressor run --out &#x27;my run&#x27;" in page
    assert "chosen: s1" in page and 'class="chosen"' in page
    assert "teacher val top-1" in page and ">b(e)</text>" in page and "all classes 10.00%" in page
    assert page.count('class="diag"') == 3 and "per_channel" in page


def test_report_from_json_round_trip_with_nan() -> None:
    """report.json holds NaN for b(e) when not bias-aware; it must not reach the SVG."""
    report = full_report()
    for row in report["distillation"]["history"]:
        row["b"] = float("nan")
    page = render_html(json.loads(json.dumps(report)))
    parse(page)
    assert not re.search(r"\bnan\b", page, flags=re.IGNORECASE)
    assert ">b(e)</text>" not in page  # no b(e) curve (legend entry), the table shows "-"


@pytest.mark.parametrize("where", ["class", "candidate", "gate", "warning", "profile", "command"])
def test_report_text_is_escaped(where: str) -> None:
    report = full_report()
    if where == "class":
        report["bias"]["teacher_train_error_per_class"] = {EVIL: 0.2, "b": 0.1, "c": 0.0}
    elif where == "candidate":
        report["selection"]["candidates"][1]["name"] = report["selection"]["chosen"] = EVIL
    elif where == "gate":
        report["gates"][0]["detail"] = report["gates"][0]["name"] = EVIL
    elif where == "warning":
        report["warnings"] = [EVIL]
    elif where == "profile":
        report["profile"]["name"] = report["profile"]["description"] = EVIL
    else:
        report["provenance"]["command"] = ["x", EVIL]
    page = render_html(report)
    parse(page)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert_self_contained(page)


def test_missing_optional_fields_render() -> None:
    report = full_report()
    for key in ("int8", "warnings"):
        del report[key]
    del report["bias"]["teacher_confusion"]
    report["parity"] = None
    report["latency"]["predicted_target_ms"] = None
    report["selection"]["calibrated_for"] = None
    for cand in report["selection"]["candidates"]:
        cand["predicted_ms"] = None
    for row in report["distillation"]["history"]:
        for key in ("ce", "right", "b", "train_top1"):
            del row[key]
    page = render_html(report)
    parser = parse(page)
    assert not {"confusion", "int8", "warnings"} & set(parser.ids)
    assert {"selection", "distillation", "bias"} <= set(parser.ids)
    assert "polygon" not in page and "predicted on" not in page  # no predicted points
    assert "not measured" in page


@pytest.mark.parametrize(
    "report",
    [
        {},
        {"passed": True},
        {"selection": {"candidates": [{"name": "a"}]}, "distillation": {"history": [{}]}},
        {
            "bias": {
                "teacher_confusion": [[1, 2], [3]],
                "teacher_train_error_per_class": {"a": None},
            }
        },
        {"gates": [None, {"name": "g"}], "provenance": {"command": "compressor run"}},
        {  # wrong types, as a hand-edited report might have
            "distillation": {"history": [{"epoch": None, "loss": "x", "b": None}, "row"]},
            "selection": {"candidates": [{"mflops": -1, "p90_ms": 1, "fits": True}, None]},
            "latency": {"p50_ms": "fast", "budget_utilisation": float("inf")},
            "profile": {"latency_ms": "1", "percentile": None},
        },
    ],
)
def test_sparse_or_old_reports_render(report: dict[str, Any]) -> None:
    page = render_html(copy.deepcopy(report))
    parser = parse(page)
    assert {"summary", "verification", "selection", "provenance"} <= set(parser.ids)
    assert_self_contained(page)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_demo_report_renders_in_chromium(tmp_path: Path) -> None:
    """The demo's real report.json renders; a screenshot is taken when Chromium is installed."""
    from typer.testing import CliRunner

    from compressor.cli.main import app

    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--quiet"])
    assert result.exit_code in (0, 1), result.output
    report_path = next((tmp_path / "demo").rglob("report.json"))
    page = render_html(json.loads(report_path.read_text()))
    parser = parse(page)
    assert {"selection", "distillation", "bias", "provenance"} <= set(parser.ids)
    assert_self_contained(page)
    html_path = report_path.with_name("report.html")
    html_path.write_text(page, encoding="utf-8")
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed: rendered and parsed, no screenshot")
    shot = tmp_path / "out.png"
    with tempfile.TemporaryDirectory() as profile:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}"]
        cmd = [browser, *flags, "--window-size=1200,3000", html_path.as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000  # a blank page is a few KiB
