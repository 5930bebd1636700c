"""The stage contract: what a step of ``compressor run`` declares (its name, its files, whether
``--resume`` may reuse it and which torchrun ranks run it) and the two calls the runner makes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.run_folder import RunFolder

if TYPE_CHECKING:
    from compressor.pipeline.context import RunContext


class Stage:
    """One step of a run. Subclasses set the class attributes and implement ``run``."""

    name = ""
    every_rank = False  # True: every torchrun rank runs it; else rank 0, the others get its result
    resumable = True  # False: produced afresh on --resume (verification, timing, the report)

    def artifacts(self, folder: RunFolder) -> list[Path]:
        """Every file the stage writes (removed when an upstream stage is re-run)."""
        return []

    def records(self, folder: RunFolder) -> list[Path]:
        """The files whose presence means the stage finished (``--resume`` reuses it)."""
        return self.artifacts(folder)

    def run(self, ctx: RunContext) -> Any:
        raise NotImplementedError

    def load(self, ctx: RunContext) -> Any:
        """The result of an earlier run of the stage, read back from the run folder."""
        raise NotImplementedError(f"stage {self.name} cannot be reused")
