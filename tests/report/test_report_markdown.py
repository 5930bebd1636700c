"""report.md and the formats it shares with report.html: every section, numbers written alike."""

from __future__ import annotations

import json
import math
import re

import pytest

from compressor.report.formatting import finite, milliseconds, number, percent, step_summary, yes_no
from compressor.report.html_page import render_html
from compressor.report.markdown import render_markdown, speedup_summary
from compressor.report.verify_md import render_verify_markdown
from tests.fakes import full_report


def test_markdown_has_every_section_in_order() -> None:
    text = render_markdown(full_report())
    headings = re.findall(r"^#+ (.+?)(?: \(|:|$)", text, flags=re.MULTILINE)
    assert headings == [
        "compressor report",
        "Gates",
        "Accuracy",
        "Parity",
        "Latency",
        "Size and speed against the teacher",
        "Student selection",
        "Distillation",
        "Teacher bias",
        "Provenance",
        "Warnings",
    ]
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert "| **s1** |" in text  # the chosen candidate in bold
    assert "| s3 | 9 | 900.0 | - | - | - | - | not timed | - |" in text


def test_markdown_and_html_write_the_same_numbers_the_same_way() -> None:
    report = json.loads(json.dumps(full_report()))
    markdown, page = render_markdown(report), render_html(report)
    for shown in ("78.00%", "99.00%", "2.00%", "0.600 ms", "12.000 ms", "1.200 ms"):
        assert shown in markdown and shown in page, shown


def test_markdown_optional_parts() -> None:
    report = full_report()
    del report["warnings"]
    report["parity"] = None
    report["distillation"]["recipe_choice"] = {
        "winner": "dkd",
        "pilot_epochs": 1,
        "total_epochs": 3,
        "pilot_seconds": 12.3,
        "pilots": [
            {"recipe": "kd", "val_top1": 0.5, "seconds": 6.1},
            {"recipe": "dkd", "val_top1": 0.6, "seconds": 6.2},
        ],
    }
    report["distillation"]["student_init"] = {"path": "s.pt", "loaded_tensors": 3}
    text = render_markdown(report)
    assert "## Warnings" not in text
    assert "- top-1 agreement" not in text
    assert "recipe chosen on the validation split: `dkd`" in text
    assert "| dkd | 60.00% | 6 | chosen |" in text
    assert "- student initialisation: `s.pt` (3 tensors loaded)" in text


@pytest.mark.parametrize(
    ("speedup", "said"),
    [
        ({"measured": True, "speedup": 2.5, "percentile": 90.0, "student_ms": 0.2,
          "teacher_ms": 0.5}, "2.50x faster than the teacher at p90 (0.200 ms vs 0.500 ms"),
        ({"measured": True, "speedup": 0.8, "percentile": 50.0, "student_ms": 0.5,
          "teacher_ms": 0.4}, "the student is SLOWER than its teacher"),
        ({"measured": False, "note": "no teacher"}, "speedup not measured: no teacher"),
        (None, "speedup not measured: the teacher was not timed"),
    ],
)  # fmt: skip
def test_speedup_summary(speedup: dict | None, said: str) -> None:
    report = full_report()
    report["speedup"] = speedup
    assert said in speedup_summary(report)
    assert speedup_summary(report).endswith("; 78.0x fewer parameters")


def test_verify_markdown() -> None:
    report = full_report()
    result = {
        **report["accuracy"],
        "model": "student.onnx",
        "test_source": "held-out test folder",
        "gates": report["gates"],
        "latency": report["latency"],
        "latency_spread": 0.03,
        "parity": report["parity"],
        "passed": False,
    }
    text = render_verify_markdown(result)
    assert text.startswith("# compressor verify: FAIL\n")
    assert "| latency_p90 | FAIL | 1.2 ms > 1 ms |" in text
    assert "- parity: agreement 100.00%, max |diff| 1e-05, mean 1e-06" in text


def test_shared_formats() -> None:
    assert (percent(0.1234), milliseconds(1.5), number(2)) == ("12.34%", "1.500 ms", "2.000")
    assert (yes_no(True), yes_no(False), yes_no(None)) == ("yes", "no", "-")
    assert finite(3) == 3.0 and finite(-0.5) == -0.5
    assert finite(True) is None and finite("1") is None and finite(None) is None
    assert finite(math.nan) is None and finite(math.inf) is None
    assert step_summary({}) == "fp32"
    step = {"precision": "bf16", "channels_last": True, "teacher_batchnorm_folded": True}
    assert step_summary({"step": {**step, "compiled": True}, "world_size": 2}) == (
        "bf16, channels-last, teacher BN folded, torch.compile, 2 ranks"
    )
