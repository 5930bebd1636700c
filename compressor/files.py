"""Atomic file writes, so an interrupted or failed run never leaves a half-written artifact."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError


def default_cache_dir() -> Path:
    """``$COMPRESSOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/compressor``, else ``~/.cache/...``."""
    if os.environ.get("COMPRESSOR_CACHE_DIR"):
        return Path(os.environ["COMPRESSOR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "compressor"


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` and rename the result over ``path`` only when it succeeded."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CompressorError(f"cannot write {path}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; artifacts are ordinary files
        os.replace(tmp, path)
    except OSError as exc:  # disk full, read-only file system, quota: bad environment, not a bug
        raise CompressorError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write a text file atomically (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path, payload: Any) -> Path:
    """Write JSON atomically, sorted and indented so diffs between runs stay readable."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON artifact written by :func:`write_json_atomic`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
