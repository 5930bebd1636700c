"""``verify.md``: a standalone ``compressor verify`` summarised for CI logs and pull requests."""

from __future__ import annotations

from typing import Any

from compressor.report.markdown import gate_rows, ms_or_na, percent_or_na, run_verdict


def _contention_lines(contention: dict[str, Any]) -> list[str]:
    """The CPU the latency timing got, and the container's thread warning, when they matter."""
    lines = []
    if contention.get("contended"):
        shares = [r["cpu"]["cpu_share"] for r in contention["repeats"] if r.get("cpu")]
        lines.append(
            f"- the host was **contended** while timing (CPU share down to {min(shares):.0%} of "
            "the threads asked for, after back-off)"
        )
    if contention.get("thread_warning"):
        lines.append(f"- {contention['thread_warning']}")
    return lines


def render_verify_markdown(result: dict[str, Any]) -> str:
    """Summary of a standalone ``compressor verify`` for CI logs and pull requests."""
    latency = result["latency"]
    lines = [
        f"# compressor verify: {run_verdict(result)}",
        "",
        f"Model `{result['model']}` on {result['images']} test images ({result['test_source']}).",
        "",
        *gate_rows(result["gates"]),
    ]
    lines += [
        "",
        f"- top-1 {percent_or_na(result['student_top1'])}, "
        f"top-5 {percent_or_na(result['student_top5'])}, "
        f"teacher top-1 {percent_or_na(result['teacher_top1'])}",
        f"- latency p50 {ms_or_na(latency['p50_ms'])}, p90 {ms_or_na(latency['p90_ms'])}, "
        f"p99 {ms_or_na(latency['p99_ms'])}, cold start {ms_or_na(latency['cold_start_ms'])}, "
        "spread over repeats "
        f"{100 * result['latency_spread']:.1f}%",
        *_contention_lines(result.get("contention") or {}),
    ]
    parity = result.get("parity")
    if parity:
        lines.append(
            f"- parity: agreement {percent_or_na(parity['top1_agreement'])}, max |diff| "
            f"{parity['max_abs_logit_diff']:.3g}, mean {parity['mean_abs_logit_diff']:.3g}"
        )
    return "\n".join(lines) + "\n"
