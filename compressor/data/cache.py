"""A disk cache of decoded images, so a second run on the same data skips the decode.

Decoding CIFAR-10's 60,000 JPEGs takes 20-30 s on two cores, every run. The decoded uint8
tensor is stored under a key made of the file list with each file's size and modification
time, the decode shape and a format version: adding, removing, replacing or touching an image
gives a new key, and the stale entry for the same folder and shape is deleted. Entries are
written atomically and read with ``weights_only=True``; a damaged entry is ignored and
rewritten. Caching is best effort: a read-only or full cache folder costs the decode, not the
run.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from compressor.files import atomic_write

FORMAT_VERSION = 2  # 2: keyed by the full eval transform, not only the shape
MAX_ENTRY_BYTES = 4 << 30  # larger decodes (ImageNet-size) are not worth a second on-disk copy
_log = logging.getLogger(__name__)

Decoded = tuple[torch.Tensor, torch.Tensor, list[str]]  # images, labels, skipped files


def _digest(parts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()[:24]


def cache_key(samples: Sequence[tuple[Path, int]], transform: str) -> tuple[str, str]:
    """(family, key): family names the folder and transform, key also every file's identity.

    ``transform`` is :meth:`compressor.data.preprocess.Preprocess.cache_tag`: the output shape and
    everything else the decoded pixels depend on.
    """
    shape = f"v{FORMAT_VERSION}:{transform}"
    root = os.path.commonpath([str(p) for p, _ in samples]) if samples else ""
    family = _digest([shape, str(Path(root).resolve()) if root else ""])
    parts = [shape]
    for path, label in samples:
        st = path.stat()
        parts.append(f"{path}|{label}|{st.st_size}|{st.st_mtime_ns}")
    return family, _digest(parts)


def _load(path: Path) -> Decoded | None:
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        return entry["images"], entry["labels"], list(entry["skipped"])
    except Exception as exc:  # torn, foreign or from another version: decode again
        _log.warning("ignoring unreadable data cache entry %s: %s", path, exc)
        return None


def cached_decode(
    samples: Sequence[tuple[Path, int]],
    transform: str,
    cache_dir: Path | None,
    decode: Callable[[], Decoded],
    log: Callable[[str], None] | None = None,
) -> Decoded:
    """``decode()``'s result, from ``cache_dir`` when an entry for exactly these files exists."""
    if cache_dir is None or not samples:
        return decode()
    try:
        family, key = cache_key(samples, transform)
    except OSError:  # a file vanished since the scan: decode() will skip and count it
        return decode()
    entry = cache_dir / f"images-{family}-{key}.pt"
    if entry.is_file():
        hit = _load(entry)
        if hit is not None:
            if log:
                log(f"data cache: reused decoded images from {entry}")
            return hit
    images, labels, skipped = decode()
    if images.numel() > MAX_ENTRY_BYTES or os.environ.get("RANK", "0") != "0":
        return images, labels, skipped  # too big to copy, or a torchrun rank other than 0
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob(f"images-{family}-*.pt"):
            if stale != entry:  # the same folder and shape with other files: out of date
                stale.unlink(missing_ok=True)
        payload = {"images": images, "labels": labels, "skipped": skipped}
        atomic_write(entry, lambda tmp: torch.save(payload, tmp))
        if log:
            log(f"data cache: stored decoded images in {entry}")
    except Exception as exc:  # read-only home in a container, disk full: run on, uncached
        _log.warning("could not write the data cache in %s: %s", cache_dir, exc)
        if log:
            log(f"warning: data cache not written ({cache_dir}): {exc}")
    return images, labels, skipped
