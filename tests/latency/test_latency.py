"""The timing protocol and percentile summaries, on constructed times (no wall-clock numbers).

A fake onnxruntime session and a fake clock make every duration exact, so the percentile the
profile asks for, the iteration rule and the cold-start figure are checked as values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compressor.latency import timing as latency
from compressor.latency.cpu import CpuProbe, CpuUse
from compressor.latency.profiles import load_profile
from compressor.latency.timing import TimingSettings, measure_onnx, session_options, summarize
from tests.conftest import write_profile

TICK = 2.0**-10  # seconds; powers of two keep the fake clock's sums exact


class FakeClock:
    def __init__(self) -> None:
        self.now = 1024.0  # not 0: a difference taken the wrong way round must show

    def perf_counter(self) -> float:
        return self.now


class FakeSession:
    """Records every run; each run advances the clock by the next scripted duration."""

    def __init__(self, clock: FakeClock, durations: list[float]) -> None:
        self.clock, self.durations, self.feeds = clock, list(durations), []

    def get_inputs(self):
        return [type("Input", (), {"name": "pixels"})()]

    def run(self, outputs, feed):
        assert outputs is None
        self.feeds.append(feed)
        self.clock.now += self.durations.pop(0) if self.durations else TICK
        return [np.zeros((1, 2), np.float32)]


@pytest.fixture
def fake_runtime(monkeypatch):
    """(clock, sessions, script): create_session returns FakeSessions running ``script``."""
    clock = FakeClock()
    sessions: list[FakeSession] = []
    script: list[float] = []

    def create(model, settings):
        clock.now += 3 * TICK  # session creation time
        sessions.append(FakeSession(clock, script))
        return sessions[-1]

    monkeypatch.setattr(latency, "time", clock)
    monkeypatch.setattr(latency, "create_session", create)
    monkeypatch.setattr(CpuProbe, "stop", lambda self: CpuUse(1.0, 0.0, 1, 1.0))  # idle host
    return clock, sessions, script


def test_summarize_quotes_the_profile_percentile() -> None:
    times = np.random.default_rng(0).permutation(np.arange(1.0, 101.0))
    settings = TimingSettings(batch_size=4, intra_op_threads=3)
    stats = summarize(times, 75.0, 12.5, settings)
    assert stats.at_percentile_ms == pytest.approx(75.25)  # numpy's linear interpolation
    assert (stats.p50_ms, stats.p90_ms, stats.p99_ms) == pytest.approx((50.5, 90.1, 99.01))
    assert (stats.mean_ms, stats.min_ms) == (50.5, 1.0)
    assert stats.std_ms == pytest.approx(np.std(np.arange(1.0, 101.0)))
    assert (stats.percentile, stats.iterations, stats.cold_start_ms) == (75.0, 100, 12.5)
    assert (stats.batch_size, stats.intra_op_threads) == (4, 3)
    assert stats.to_dict()["at_percentile_ms"] == stats.at_percentile_ms


@given(
    times=st.lists(st.floats(1e-3, 1e4, allow_nan=False), min_size=1, max_size=300),
    percentile=st.floats(1.0, 99.9),
)
@settings(max_examples=60, deadline=None, derandomize=True)
def test_summarize_agrees_with_numpy(times: list[float], percentile: float) -> None:
    array = np.asarray(times)
    stats = summarize(array, percentile, 0.0, TimingSettings())
    expected = np.percentile(array, [50, 90, 99, percentile])
    got = [stats.p50_ms, stats.p90_ms, stats.p99_ms, stats.at_percentile_ms]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms <= array.max()
    assert stats.mean_ms == pytest.approx(array.mean()) and stats.iterations == array.size


def test_timing_settings_follow_the_profile(tmp_path: Path) -> None:
    profile = load_profile(
        str(
            write_profile(
                tmp_path / "p.toml",
                **{
                    "input.batch_size": "3",
                    "runtime.intra_op_threads": "2",
                    "runtime.inter_op_threads": "4",
                    "runtime.execution_mode": '"parallel"',
                    "runtime.graph_optimization": '"basic"',
                    "budget.warmup_runs": "7",
                    "budget.min_iterations": "11",
                    "budget.min_seconds": "0.25",
                },
            )
        )
    )
    assert TimingSettings.from_profile(profile) == TimingSettings(
        batch_size=3, intra_op_threads=2, inter_op_threads=4, execution_mode="parallel",
        graph_optimization="basic", warmup_runs=7, min_iterations=11, min_seconds=0.25,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "level", "ort_mode", "ort_level"),
    [
        ("sequential", "all", "ORT_SEQUENTIAL", "ORT_ENABLE_ALL"),
        ("parallel", "disable", "ORT_PARALLEL", "ORT_DISABLE_ALL"),
        ("sequential", "basic", "ORT_SEQUENTIAL", "ORT_ENABLE_BASIC"),
        ("parallel", "extended", "ORT_PARALLEL", "ORT_ENABLE_EXTENDED"),
    ],
)
def test_session_options(mode: str, level: str, ort_mode: str, ort_level: str) -> None:
    options = session_options(
        TimingSettings(
            intra_op_threads=3, inter_op_threads=2, execution_mode=mode, graph_optimization=level
        )
    )
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 2)
    assert options.execution_mode == getattr(ort.ExecutionMode, ort_mode)
    assert options.graph_optimization_level == getattr(ort.GraphOptimizationLevel, ort_level)
    assert options.log_severity_level == 3


def test_protocol_cold_start_warmup_then_timed_runs(fake_runtime) -> None:
    _, sessions, script = fake_runtime
    first, warmups = 5 * TICK, [7 * TICK] * 3
    timed = [float(k) * TICK for k in (4, 1, 3, 2, 8, 6, 5, 7, 9, 10)]
    script += [first, *warmups, *timed]
    settings = TimingSettings(batch_size=2, warmup_runs=3, min_iterations=10, min_seconds=0.0)
    stats = measure_onnx(b"model", (1, 4, 4), settings, percentile=75.0, seed=5, rounds=1)
    (session,) = sessions
    assert len(session.feeds) == 1 + 3 + 10  # first run, warm-up, timed
    assert stats.iterations == 10
    assert stats.cold_start_ms == pytest.approx((3 * TICK + first) * 1e3)  # creation + 1st run
    expected = np.asarray(timed) * 1e3
    assert stats.at_percentile_ms == pytest.approx(np.percentile(expected, 75.0))
    assert stats.min_ms == pytest.approx(1 * TICK * 1e3)  # warm-up runs are not timed
    batch = np.random.default_rng(5).standard_normal((2, 1, 4, 4)).astype(np.float32)
    for feed in session.feeds:
        assert list(feed) == ["pixels"]
        np.testing.assert_array_equal(feed["pixels"], batch)
        assert feed["pixels"].dtype == np.float32


@pytest.mark.usefixtures("fake_runtime")  # every run takes one TICK
def test_timed_runs_continue_until_min_seconds() -> None:
    settings = TimingSettings(warmup_runs=0, min_iterations=10, min_seconds=32 * TICK)
    stats = measure_onnx(b"model", (1, 4, 4), settings, rounds=1)
    assert stats.iterations == 32  # exactly min_seconds of runs, not one more
    settings = TimingSettings(warmup_runs=2, min_iterations=40, min_seconds=32 * TICK)
    assert measure_onnx(b"model", (1, 4, 4), settings, rounds=1).iterations == 40
    settings = TimingSettings(warmup_runs=0, min_iterations=50, min_seconds=40 * TICK)
    stats = measure_onnx(b"model", (1, 4, 4), settings)  # 5 rounds of 8 TICKs and 10 runs
    assert stats.rounds == 5 and stats.iterations == 50


def test_measure_onnx_uses_seed_zero_and_p90_by_default(fake_runtime) -> None:
    _, sessions, script = fake_runtime
    script += [TICK] + [float(k) * TICK for k in range(1, 11)]  # every session runs this
    stats = measure_onnx(
        b"m", (1, 2, 2), TimingSettings(warmup_runs=0, min_iterations=10, min_seconds=0)
    )
    assert stats.percentile == 90.0 and stats.rounds == 5 and len(sessions) == 5  # fresh each
    expected = np.percentile(np.arange(1, 11) * TICK * 1e3, 90)
    assert stats.at_percentile_ms == pytest.approx(expected)
    batch = np.random.default_rng(0).standard_normal((1, 1, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(sessions[0].feeds[0]["pixels"], batch)


def test_create_session_applies_the_settings_on_the_cpu(tmp_path: Path) -> None:
    """A real (one-node) session, from a file and from bytes, carries the profile's options."""
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", io[:1], io[1:])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    path = tmp_path / "identity.onnx"
    path.write_bytes(data)
    settings = TimingSettings(
        intra_op_threads=3,
        inter_op_threads=2,
        execution_mode="parallel",
        graph_optimization="basic",
    )
    for source in (path, data):
        session = latency.create_session(source, settings)
        assert session.get_providers() == ["CPUExecutionProvider"]
        options = session.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 2)
        assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
        assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        out = session.run(None, {"x": np.ones((1, 2), np.float32)})[0]
        assert out.tolist() == [[1.0, 1.0]]


def test_channel_block_is_onnxruntimes_nchwc_block_for_the_cpu() -> None:
    from compressor.latency.cpu import channel_block

    assert channel_block({"avx2", "avx512f", "avx512_vnni"}) == 16
    assert channel_block({"avx2", "fma"}) == 8
    assert channel_block({"asimd"}) == 8 and channel_block(set()) == 8
