"""The run folder: every artifact's path, the run marker, and the folder's safety rules.

One class owns the file names, so the stages, ``--resume`` and ``compressor distill`` agree on
them without string literals scattered through the pipeline.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor import __version__
from compressor.errors import CompressorError
from compressor.files import read_json, write_json_atomic

# also the names `compressor verify --out` writes
VERIFY_JSON, VERIFY_MD = "verify.json", "verify.md"


@dataclass(frozen=True)
class RunFolder:
    """Paths of a run's artifacts under ``root`` (the ``--out`` folder)."""

    root: Path

    MARKER = "run.json"

    @property
    def marker(self) -> Path:
        """run.json: the compressor version and the configuration the run was started with."""
        return self.root / self.MARKER

    @property
    def selection(self) -> Path:
        return self.root / "selection.json"

    @property
    def derived_student(self) -> Path:
        """A derived student before training: pruned from the teacher, BatchNorm recomputed."""
        return self.root / "derived_init.pt"

    @property
    def train_state(self) -> Path:
        """The last completed epoch's training state (``--resume`` continues from it)."""
        return self.root / "train_state.pt"

    @property
    def pilot_record(self) -> Path:
        """``--method auto``: the pilots finished so far."""
        return self.root / "pilot.json"

    def pilot_checkpoint(self, recipe: str) -> Path:
        """``--method auto``: the training state of one recipe's pilot."""
        return pilot_checkpoint(self.root, recipe)

    def pilot_checkpoints(self) -> list[Path]:
        return sorted(self.root.glob(pilot_checkpoint(Path(), "*").name))

    @property
    def student_bundle(self) -> Path:
        return self.root / "student.pt"

    @property
    def distill_record(self) -> Path:
        return self.root / "distill.json"

    @property
    def onnx(self) -> Path:
        return self.root / "student.onnx"

    @property
    def export_record(self) -> Path:
        return self.root / "export.json"

    @property
    def verify_record(self) -> Path:
        return self.root / VERIFY_JSON

    @property
    def verify_md(self) -> Path:
        """``compressor verify --out``: the gates as Markdown, beside verify.json."""
        return self.root / VERIFY_MD

    @property
    def int8_onnx(self) -> Path:
        return self.root / "student.int8.onnx"

    @property
    def int8_record(self) -> Path:
        return self.root / "int8.json"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    def listed_artifacts(self) -> dict[str, str]:
        """report.json's ``artifacts``: the files a reader of a finished run looks for."""
        paths = (
            self.onnx,
            self.report_md,
            self.report_html,
            self.student_bundle,
            self.selection,
            self.distill_record,
            self.verify_record,
        )
        return {path.name: str(path) for path in paths}

    def check(self, overwrite: bool, resume: bool = False) -> None:
        """Refuse to mix two runs in one folder unless the user asked to overwrite or resume."""
        out = self.root
        if out.exists() and not out.is_dir():
            raise CompressorError(f"output path exists and is not a folder: {out}")
        if resume:
            if not self.marker.is_file():
                raise CompressorError(f"nothing to resume: {out} has no {self.MARKER}")
            return
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise CompressorError(
                f"output folder {out} is not empty; pass --overwrite to replace it or --resume to "
                "continue the run in it"
            )

    def prepare(self, overwrite: bool) -> None:
        """Create the folder (emptied first with ``overwrite``) and prove it is writable."""
        out = self.root
        if out.is_dir() and overwrite:
            if any(out.iterdir()) and not self.marker.exists():
                raise CompressorError(
                    f"refusing to overwrite {out}: it is not a compressor run folder "
                    f"(no {self.MARKER})"
                )
            shutil.rmtree(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise CompressorError(f"cannot write to output folder {out}: {exc.strerror}") from exc

    def write_marker(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.marker, {"compressor": __version__, "config": config})

    def read_config(self) -> dict[str, Any]:
        """The configuration recorded in run.json (``--resume`` and ``compressor distill``)."""
        self.check(overwrite=False, resume=True)
        try:
            config = read_json(self.marker)["config"]
            if not isinstance(config, dict):
                raise TypeError("config is not an object")
        except (KeyError, TypeError, ValueError) as exc:
            raise self.damaged(exc) from exc
        return config

    def damaged(self, exc: Exception) -> CompressorError:
        return CompressorError(f"{self.marker} is damaged or from another version: {exc}")

    @staticmethod
    def all_exist(paths: Iterable[Path]) -> bool:
        return all(path.is_file() for path in paths)

    @staticmethod
    def remove(paths: Iterable[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)


def pilot_checkpoint(state_dir: Path, recipe: str) -> Path:
    """``pilot_kd+bias.pt`` style names (the recipe names are file-name safe)."""
    return state_dir / f"pilot_{recipe}.pt"
