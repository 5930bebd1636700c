"""Images read from disk batch by batch, for datasets too large to decode into memory.

ImageNet-1k at 224 px is 193 GB of uint8: it cannot be decoded into RAM once as the small-image
path does. A :class:`StreamedSplit` keeps only the file names (one numpy string array, so
forked workers do not copy-on-write a Python list) and the labels; DataLoader worker processes
decode each batch through the same :class:`~compressor.data.preprocess.Preprocess` the in-memory
path uses, into one uint8 (B, C, H, W) tensor per batch (pinned when the consumer is a GPU).

Both storages answer the same two questions, :meth:`read` (a few rows, e.g. the int8
calibration set) and :meth:`iter_batches` (rows in a given order, e.g. an epoch), and return
the same pixels, so a run's result does not depend on which one the automatic choice picked
(``tests/data/test_streaming.py`` trains both ways and compares the weights). Training augmentation
stays batched on the training device for both (see :func:`compressor.data.splits.train_augment`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from compressor.data.preprocess import Preprocess
from compressor.errors import CompressorError

DATA_MODES = ("auto", "memory", "stream")
MEMORY_FRACTION = 0.25  # of the available RAM: decoding peaks at ~3x the decoded size
# Workers start from a clean server process, not a fork: by the time data streams, the process
# has run onnxruntime and torch thread pools, and a forked child of a threaded process can
# inherit a held allocator lock (seen here as "double free or corruption" in a worker).
WORKER_START = "forkserver"
_UNREADABLE = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)


def decode_file(path: str | Path, preprocess: Preprocess) -> np.ndarray | None:
    """One image as (C, H, W) uint8 after the eval transform, or None when it is unreadable."""
    try:
        with Image.open(path) as opened:
            return preprocess.apply(opened)
    except _UNREADABLE:
        return None


def readable_header(path: Path) -> bool:
    """Whether PIL recognises the file as an image (reads the header, not the pixels)."""
    try:
        with Image.open(path) as opened:
            return opened.size[0] > 0 and opened.size[1] > 0
    except _UNREADABLE:
        return False


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else the physical memory size."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class StorageChoice:
    """Where decoded images live for this run, and the numbers the choice was made from."""

    mode: str  # "memory" or "stream"
    decoded_bytes: int
    budget_bytes: int | None  # None when the user forced the mode
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "storage": self.mode,
            "decoded_gb": round(self.decoded_bytes / 1e9, 3),
            "memory_budget_gb": round(self.budget_bytes / 1e9, 3) if self.budget_bytes else None,
            "storage_reason": self.reason,
        }


def choose_storage(
    requested: str, images: int, shape: Sequence[int], processes_per_host: int = 1
) -> StorageChoice:
    """``memory`` when the decoded uint8 images fit a quarter of the available RAM (shared by
    the processes of this host), ``stream`` otherwise; ``requested`` other than auto wins.

    A quarter, because decoding into memory peaks at about three copies (decoded arrays, the
    stacked tensor, the split subsets) before settling at one.
    """
    if requested not in DATA_MODES:
        raise CompressorError(f"unknown data mode {requested!r}; allowed: {', '.join(DATA_MODES)}")
    decoded = images * int(np.prod(shape))
    if requested != "auto":
        return StorageChoice(requested, decoded, None, f"--data-{requested} given")
    budget = int(available_memory_bytes() * MEMORY_FRACTION / max(1, processes_per_host))
    gb = f"{decoded / 1e9:.2f} GB decoded vs a {budget / 1e9:.2f} GB budget"
    if decoded <= budget:
        return StorageChoice("memory", decoded, budget, f"fits in memory ({gb})")
    return StorageChoice("stream", decoded, budget, f"streamed from disk ({gb})")


def default_workers(processes_per_host: int = 1) -> int:
    """Decode workers per process: the host's cores shared by its processes, one left for the
    training step, at least one, at most 8 (``$COMPRESSOR_DATA_WORKERS`` overrides)."""
    if os.environ.get("COMPRESSOR_DATA_WORKERS"):
        return max(0, int(os.environ["COMPRESSOR_DATA_WORKERS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) // max(1, processes_per_host) - 1))


class _Files(torch.utils.data.Dataset[tuple[torch.Tensor, list[int]]]):
    """Decodes a batch of files in a worker into one uint8 tensor (one shared-memory transfer)."""

    def __init__(self, files: np.ndarray, preprocess: Preprocess) -> None:
        self.files = files
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[int]]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, list[int]]:
        height, width = self.preprocess.size
        out = np.zeros((len(indices), self.preprocess.channels, height, width), dtype=np.uint8)
        broken = []
        for row, index in enumerate(indices):
            array = decode_file(str(self.files[index]), self.preprocess)
            if array is None:
                broken.append(index)
            else:
                out[row] = array
        return torch.from_numpy(out), broken


def _as_is(batch: Any) -> Any:
    """The collate function: a batch is already one tensor (see ``_Files.__getitems__``)."""
    return batch


class _OrderSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of a caller-given order; replaced before each pass so workers can persist."""

    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


@dataclass
class StreamedSplit:
    """Image files and labels; pixels are decoded when a batch is asked for."""

    files: np.ndarray  # numpy str array: no per-item Python objects for workers to touch
    labels: torch.Tensor
    preprocess: Preprocess
    workers: int = field(default_factory=default_workers)
    _loaders: dict[bool, tuple[torch.utils.data.DataLoader, _OrderSampler]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_loaders"] = {}  # worker handles do not travel
        return state

    def subset(self, index: torch.Tensor) -> StreamedSplit:
        return StreamedSplit(self.files[index.numpy()], self.labels[index], self.preprocess,
                             self.workers)  # fmt: skip

    def read(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 (len(index), C, H, W), decoded in threads (for small fixed sets)."""
        height, width = self.preprocess.size
        out = np.zeros((len(index), self.preprocess.channels, height, width), dtype=np.uint8)
        paths = [str(self.files[i]) for i in index.tolist()]
        with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
            arrays = list(pool.map(lambda p: decode_file(p, self.preprocess), paths))
        for row, array in enumerate(arrays):
            if array is None:
                raise _broken(paths[row])
            out[row] = array
        return torch.from_numpy(out)

    def iter_batches(
        self, order: torch.Tensor, batch_size: int, pin_memory: bool = False
    ) -> Iterator[torch.Tensor]:
        """uint8 batches of the rows in ``order``, decoded ahead by worker processes."""
        if self.workers == 0:
            for start in range(0, len(order), batch_size):
                yield self.read(order[start : start + batch_size])
            return
        loader, sampler = self._loader(pin_memory)
        flat = order.tolist()
        sampler.chunks = [flat[s : s + batch_size] for s in range(0, len(flat), batch_size)]
        for images, broken in loader:
            if broken:
                raise _broken(str(self.files[broken[0]]))
            yield images

    def _loader(self, pin_memory: bool) -> tuple[torch.utils.data.DataLoader, _OrderSampler]:
        if pin_memory not in self._loaders:
            sampler = _OrderSampler()
            loader = torch.utils.data.DataLoader(
                _Files(self.files, self.preprocess),
                batch_sampler=sampler,
                num_workers=self.workers,
                collate_fn=_as_is,
                pin_memory=pin_memory,
                persistent_workers=True,
                prefetch_factor=4,
                multiprocessing_context=WORKER_START,
            )
            self._loaders[pin_memory] = (loader, sampler)
        return self._loaders[pin_memory]


def _broken(path: str) -> CompressorError:
    return CompressorError(
        f"{path}: the image could not be decoded (truncated or corrupt); remove it, or use "
        "--data-in-memory, which skips unreadable images and counts them in the report"
    )


def scan_readable(
    samples: Sequence[tuple[Path, int]],
) -> tuple[list[tuple[Path, int]], list[str]]:
    """The samples whose header PIL reads, and the skipped ones (read in threads)."""
    with ThreadPoolExecutor(max(1, min(16, 2 * (os.cpu_count() or 1)))) as pool:
        ok = list(pool.map(lambda s: readable_header(s[0]), samples, chunksize=256))
    kept = [s for s, good in zip(samples, ok, strict=True) if good]
    skipped = [str(s[0]) for s, good in zip(samples, ok, strict=True) if not good]
    return kept, skipped


def streamed_split(
    samples: Sequence[tuple[Path, int]], preprocess: Preprocess, workers: int | None = None
) -> tuple[StreamedSplit, list[str]]:
    """A split over the readable files of ``samples``, and the skipped ones."""
    kept, skipped = scan_readable(samples)
    files = np.array([str(p) for p, _ in kept]) if kept else np.zeros(0, dtype="<U1")
    labels = torch.tensor([label for _, label in kept], dtype=torch.long)
    workers = default_workers() if workers is None else workers
    return StreamedSplit(files, labels, preprocess, workers), skipped
