"""Progress lines with a bar, elapsed and remaining time, readable in a terminal and a CI log.

Plain lines rather than a redrawing widget: a CI log keeps every line, and a person watching a
terminal still sees how far each stage is and how long it has left.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Formats ``tick`` calls of a stage into lines handed to ``log``."""

    def __init__(self, log: Callable[[str], None], width: int = 20) -> None:
        self.log = log
        self.width = width
        self.started: dict[str, float] = {}

    def tick(self, stage: str, done: int, total: int, detail: str = "") -> None:
        """Report that ``done`` of ``total`` steps of ``stage`` are finished."""
        now = time.perf_counter()
        start = self.started.setdefault(stage, now)
        if done <= 0:
            return
        elapsed = now - start
        left = elapsed / done * (total - done)
        filled = round(self.width * done / max(total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"{stage} {done}/{total} [{bar}] {elapsed:.0f}s elapsed, ~{left:.0f}s left"
        self.log(f"{text}: {detail}" if detail else text)

    def start(self, stage: str) -> None:
        """Mark the start of a stage whose first tick comes after a long step."""
        self.started[stage] = time.perf_counter()
