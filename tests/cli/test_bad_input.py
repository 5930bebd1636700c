"""Bad environments for the output: disk full, read-only folder, a file in the way."""

import errno
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compressor.cli.main import app
from compressor.errors import CompressorError
from compressor.files import write_text_atomic
from tests.conftest import write_profile

runner = CliRunner()


def test_disk_full_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "report.json"
    target.write_text("previous complete version")

    def full(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    from compressor import files as io

    with pytest.raises(CompressorError, match="No space left on device"):
        io.atomic_write(target, full)
    assert target.read_text() == "previous complete version"
    assert list(tmp_path.iterdir()) == [target]


def test_read_only_output_folder_is_one_clear_line(
    teacher_path: Path, digits_root: Path, tmp_path: Path, monkeypatch
) -> None:
    real_mkdir = Path.mkdir

    def read_only(self: Path, *args, **kwargs) -> None:
        if self.name == "ro_run":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = runner.invoke(app, [
        "run", "--teacher", str(teacher_path), "--data", str(digits_root),
        "--profile", str(write_profile(tmp_path / "p.toml")), "--out", str(tmp_path / "ro_run"),
        "--candidates", "cifar_resnet8_w8", "--epochs", "1", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: cannot write to output folder {tmp_path / 'ro_run'}: Read-only file system"
    )


def test_output_path_is_a_file(teacher_path: Path, digits_root: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    result = runner.invoke(app, [
        "run", "--teacher", str(teacher_path), "--data", str(digits_root),
        "--profile", str(write_profile(tmp_path / "p.toml")), "--out", str(tmp_path / "taken"),
    ])  # fmt: skip
    assert result.exit_code == 2 and "not a folder" in result.stderr


def test_write_into_missing_parent_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CompressorError, match="cannot write"):
        write_text_atomic(tmp_path / "file" / "sub" / "a.txt", "text")


def test_run_without_required_options_names_them(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "missing --teacher, --data, --profile" in result.stderr


def test_unknown_precision_is_one_line_and_writes_nothing(
    teacher_path: Path, digits_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    profile = write_profile(tmp_path / "tiny.toml")
    result = runner.invoke(app, [
        "run", "--teacher", str(teacher_path), "--data", str(digits_root),
        "--profile", str(profile), "--out", str(out), "--precision", "fp8",
    ])  # fmt: skip
    assert result.exit_code == 2
    assert "unknown precision 'fp8' (choose one of: auto, fp32, bf16, fp16)" in result.output
    assert "Traceback" not in result.output and not out.exists()


def _run_args(teacher: Path, data: Path, profile: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--teacher", str(teacher), "--data", str(data), "--profile", str(profile),
            "--out", str(out), "--candidates", "cifar_resnet8_w8", "--epochs", "1", "--quiet",
            *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("profile_keys", "extra", "message"),
    [
        (
            {"input.shape": "[1, 96, 96]", "preprocess.resize_size": "80"},
            (),
            "resize size 80 cannot produce the 96x96 input",
        ),
        ({}, ("--resize-mode", "stretch"), "unknown resize mode 'stretch'"),
        ({"preprocess.resize_mode": '"fit"'}, (), "key 'preprocess.resize_mode' is 'fit'"),
        ({"preprocess.train_scale": "[0.9, 0.2]"}, (), "preprocess.train_scale"),
    ],
)
def test_impossible_preprocessing_is_one_line_and_writes_nothing(
    teacher_path: Path, digits_root: Path, tmp_path: Path, profile_keys, extra, message
) -> None:
    out = tmp_path / "run"
    profile = write_profile(tmp_path / "p.toml", **profile_keys)
    result = runner.invoke(app, _run_args(teacher_path, digits_root, profile, out, *extra))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


def test_speedup_floor_nothing_meets_names_teacher_and_fastest(
    teacher_path: Path, digits_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    profile = write_profile(tmp_path / "p.toml", **{"budget.min_speedup": "1000"})
    result = runner.invoke(app, _run_args(teacher_path, digits_root, profile, out))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert (
        "no student is 1000x faster than the teacher: the teacher cifar_resnet20_w32 takes"
        in (lines[0])
    )
    assert "the fastest candidate cifar_resnet8_w8" in lines[0]
    assert not out.exists()


def test_a_bug_exits_4_with_its_traceback_not_the_retry_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit code 3 tells CI to retry (a contended host); a crash must not look like that."""
    from compressor.cli import main as cli
    from compressor.errors import EXIT_INCONCLUSIVE, EXIT_INTERNAL_ERROR

    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "app", broken)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == EXIT_INTERNAL_ERROR == 4 != EXIT_INCONCLUSIVE
    assert "RuntimeError: boom" in capsys.readouterr().err
