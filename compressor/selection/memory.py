"""Remembering a selection on this host, so the same command keeps choosing the same student.

Selection picks the least-pruned (or largest) student that qualifies, so the step it ships is by
construction the one nearest the bar: on a 2-core host the same 224-px command chose the
``-0.47x`` step 7 times in 10 and its neighbour ``-0.53x`` 3 times, because whole runs differ by
about 10% in the paired speedup while neighbouring steps differ by less (docs/selection.md).
No threshold on one run's measurement can make such a choice repeat. What can is hysteresis, as
autotuners keep a timing cache: the first run's choice is remembered under a key of everything
that decides it (the teacher's weights, the profile, the candidate scope, the host), and a later
run re-measures that one student and keeps it while it is not clearly worse. It enters on a
clear pass (the target, an interval wholly above ``min_speedup``, a median above
``target_speedup``) and leaves only on a clear
miss (over the budget itself, an interval wholly below ``min_speedup``): the safety margin and
the interval's width are the band in between. A miss searches again and replaces the entry.

Torch-free: the teacher's fingerprint is computed by the caller.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError
from compressor.files import default_cache_dir, write_json_atomic
from compressor.latency.cpu import cpu_allowance, cpu_model
from compressor.selection.table import Selection

FILE_NAME = "selections.json"
PATH_ENV = "COMPRESSOR_SELECTION_MEMORY"  # a file path: e.g. one a CI job keeps in its cache
MAX_ENTRIES = 200  # oldest dropped first: the file stays small in a long-lived cache


def default_memory_path() -> Path:
    """``$COMPRESSOR_SELECTION_MEMORY``, else ``selections.json`` in the cache folder
    (:func:`compressor.files.default_cache_dir`)."""
    if os.environ.get(PATH_ENV):
        return Path(os.environ[PATH_ENV])
    return default_cache_dir() / FILE_NAME


def host_identity() -> dict[str, Any]:
    """What makes latencies on this host comparable: CPU model, cores allowed, runtime."""
    try:
        from importlib.metadata import version

        ort = version("onnxruntime")
    except Exception:
        ort = "unknown"
    from compressor import __version__

    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "allowance": cpu_allowance().to_dict(),
        "onnxruntime": ort,
        "compressor": __version__,
    }


def decision_key(
    teacher_fingerprint: str, profile: Mapping[str, Any], scope: Mapping[str, Any]
) -> str:
    """One key per (teacher weights, profile, candidate scope, host)."""
    payload = {
        "teacher": teacher_fingerprint,
        "profile": profile,
        "scope": scope,
        "host": host_identity(),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def model_fingerprint(model: Any) -> str:
    """A hash of a torch module's class, parameter names, shapes, dtypes and values."""
    import torch

    h = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        h.update(raw.numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Remembered:
    """A choice made by an earlier run with the same key."""

    chosen: str
    source: str  # "pruned" or "fresh"
    decided_utc: str
    speedup: float | None = None
    at_percentile_ms: float | None = None
    teacher_ms: float | None = None  # the teacher's latency then: the host's speed at the time


class SelectionMemory:
    """The entries of one ``selections.json``; a path of None remembers nothing."""

    def __init__(self, path: Path | None, key: str) -> None:
        self.path, self.key = path, key

    def recall(self) -> Remembered | None:
        entry = self._entries().get(self.key)
        if not isinstance(entry, dict):
            return None
        try:
            return Remembered(
                **{k: entry[k] for k in Remembered.__dataclass_fields__ if k in entry}
            )
        except TypeError:  # an entry written by another version: ignore it, search again
            return None

    def remember(
        self,
        chosen: str,
        source: str,
        speedup: float | None,
        ms: float | None,
        teacher_ms: float | None = None,
    ) -> str | None:
        """Store the choice; returns a warning line when the file cannot be written."""
        if self.path is None:
            return None
        entries = self._entries()
        entries.pop(self.key, None)
        entries[self.key] = {
            "chosen": chosen,
            "source": source,
            "decided_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "speedup": speedup,
            "at_percentile_ms": ms,
            "teacher_ms": teacher_ms,
        }
        while len(entries) > MAX_ENTRIES:
            entries.pop(next(iter(entries)))
        try:
            write_json_atomic(self.path, entries)
        except CompressorError as exc:
            return f"warning: selection not remembered ({exc})"
        return None

    def _entries(self) -> dict[str, Any]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # unreadable or corrupt: start over, never fail a run
            return {}
        return data if isinstance(data, dict) else {}


def remember_choice(
    memory: SelectionMemory, prior: Remembered | None, selection: Selection, log: Any
) -> dict[str, Any]:
    """Log whether the remembered choice held, store a new one, and say so in the selection."""
    row = selection.chosen_candidate
    teacher_ms = selection.teacher.at_percentile_ms if selection.teacher else None
    where = f"selection memory {memory.path}; --no-selection-memory searches afresh"
    if prior is not None and prior.chosen == selection.chosen:
        speed = f", {row.speedup:.2f}x the teacher" if row.speedup else ""
        host = ""
        if prior.teacher_ms and teacher_ms:
            host = f"; teacher {teacher_ms:.3f} ms now, {prior.teacher_ms:.3f} ms then"
        log(f"kept {selection.chosen}, chosen on this host on {prior.decided_utc}: re-timed at "
            f"{row.at_percentile_ms:.3f} ms{speed}{host}, it still holds ({where})")  # fmt: skip
    else:
        if prior is not None:
            log(f"the remembered choice {prior.chosen} ({prior.decided_utc}) no longer holds: "
                f"searched again ({where})")  # fmt: skip
        warning = memory.remember(
            selection.chosen, selection.student_source, row.speedup, row.at_percentile_ms,
            teacher_ms,
        )  # fmt: skip
        if warning:
            log(warning)
    return {
        "path": str(memory.path),
        "prior": prior.chosen if prior else None,
        "prior_decided_utc": prior.decided_utc if prior else None,
        "kept": prior is not None and prior.chosen == selection.chosen,
    }
