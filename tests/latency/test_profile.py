from pathlib import Path

import pytest

from compressor.errors import CompressorError
from compressor.latency.profiles import available_profiles, load_profile, schema_markdown
from tests.conftest import write_profile


def test_bundled_profiles_load() -> None:
    names = available_profiles()
    assert {"demo", "cpu-1thread"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.latency_ms > 0
        assert profile.target_ms == pytest.approx(profile.latency_ms * (1 - profile.safety_margin))


def test_profile_from_path_and_defaults(tmp_path: Path) -> None:
    profile = load_profile(str(write_profile(tmp_path / "p.toml")))
    assert profile.input_shape == (1, 8, 8)
    assert profile.graph_optimization == "all"
    assert profile.min_agreement == 0.995


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"budget.latency_ms": "-1.0"}, "budget.latency_ms' is -1.0, out of range"),
        ({"budget.latency_ms": "0"}, "budget.latency_ms' is 0.0, out of range"),
        ({"budget.latency_ms": '"fast"'}, "budget.latency_ms' has type str"),
        ({"budget.latency_ms": "DELETE"}, "missing required key 'budget.latency_ms'"),
        ({"input.shape": "[3, 32]"}, "input.shape' is [3, 32]"),
        ({"input.shape": "[4, 32, 32]"}, "has 4 channels"),
        ({"runtime.intra_op_threads": "0"}, "runtime.intra_op_threads' is 0"),
        ({"runtime.execution_mode": '"fast"'}, "one of 'sequential', 'parallel'"),
        ({"budget.latncy_ms": "1.0"}, "did you mean 'latency_ms'"),
        ({"extras.foo": "1"}, "unknown table [extras]"),
        ({"input.batch_size": "true"}, "input.batch_size' has type bool"),
    ],
)
def test_profile_errors_name_file_key_and_range(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    path = write_profile(tmp_path / "bad.toml", **overrides)
    with pytest.raises(CompressorError) as info:
        load_profile(str(path))
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_malformed_toml_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[input\nshape = [1, 8, 8]\n')
    with pytest.raises(CompressorError, match=r"not valid TOML.*line 2"):
        load_profile(str(path))


def test_unknown_profile_name_suggests_closest() -> None:
    with pytest.raises(CompressorError, match="did you mean 'cpu-1thread'"):
        load_profile("cpu-1thred")


def test_missing_profile_file() -> None:
    with pytest.raises(CompressorError, match="profile file not found"):
        load_profile("/nonexistent/profile.toml")


def test_schema_markdown_lists_every_table() -> None:
    text = schema_markdown()
    for key in ("input.shape", "budget.latency_ms", "gates.max_top1_drop", "export.opset"):
        assert f"`{key}`" in text


def test_bundled_name_wins_over_a_same_named_folder(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "demo").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_profile("demo").name == "demo"
