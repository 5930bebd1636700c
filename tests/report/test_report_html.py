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
from tests.fakes import full_report

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}
SECTIONS = ("summary", "verification", "gates", "accuracy", "parity", "latency", "size")
SECTIONS += ("selection", "distillation", "bias", "provenance")
EVIL = "<script>alert(1)</script>"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


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
