"""The inconclusive path end to end: a contended host makes ``compressor select`` exit 3.

In its own module because ``tests/latency/test_paired_timing.py`` uses the module-scoped stand-in
exporter of ``tests/selection/test_select.py``, and this test exports real graphs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compressor.latency import timing as latency
from compressor.latency.cpu import CpuProbe, CpuUse

pytestmark = pytest.mark.usefixtures("judge_contention")  # contention judged as in production

BUSY = CpuUse(0.66, 0.5, 2, 1.0)


def test_cli_select_on_a_contended_host_is_one_line_exit_3_and_writes_nothing(
    teacher_path: Path, tiny_profile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real export and real sessions; only the CPU probe reports a busy host, and the back-off
    waits are skipped."""
    from typer.testing import CliRunner

    from compressor.cli.main import app

    monkeypatch.setattr(CpuProbe, "stop", lambda self: BUSY)
    monkeypatch.setattr(latency.time, "sleep", lambda _s: None)
    out = tmp_path / "sel"
    result = CliRunner().invoke(app, [
        "select", "--teacher", str(teacher_path), "--profile", str(tiny_profile),
        "--student-source", "fresh", "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 3, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: latency decision inconclusive: the host was contended")
    assert "Traceback" not in result.output and not out.exists()
