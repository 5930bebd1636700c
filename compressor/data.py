"""Image data: ImageFolder trees decoded once into uint8 tensors, seeded splits, batching.

Small-image datasets (CIFAR-sized, the embedded digits) fit in memory as ``uint8`` tensors of
shape (N, C, H, W); decoding once and normalising per batch is far faster than a per-sample
DataLoader, and the same tensors can be moved to a GPU. Broken or non-image files are skipped
and counted (the count goes into the report) rather than aborting a long job.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from compressor.data_cache import cached_decode
from compressor.errors import CompressorError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class Split:
    """Images (N, C, H, W) uint8 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DatasetSplits:
    """Train / validation / test splits of one dataset, plus where they came from."""

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    root: str
    test_source: str  # "test/", "val/" or "held-out split (seed N)"
    skipped: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, object]:
        return {
            "root": self.root,
            "classes": len(self.class_names),
            "class_names": self.class_names,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "test_source": self.test_source,
            "skipped_files": len(self.skipped),
            "skipped_examples": self.skipped[:10],
        }


def scan_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """List ``root/<class>/<image>`` files. Class names are the sorted sub-folder names."""
    if not root.exists():
        raise CompressorError(f"data folder not found: {root}")
    if not root.is_dir():
        raise CompressorError(f"data path is not a folder: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise CompressorError(f"{root} has no class sub-folders (expected {root}/<class>/<image>)")
    samples: list[tuple[Path, int]] = []
    empty = []
    for index, name in enumerate(classes):
        files = sorted(
            p for p in (root / name).rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        if not files:
            empty.append(name)
        samples.extend((p, index) for p in files)
    if empty:
        raise CompressorError(f"{root}: empty class folder(s): {', '.join(empty[:5])}")
    return classes, samples


def _decode(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray | None:
    """One image as (C, H, W) uint8, or None when the file is not a readable image."""
    try:
        with Image.open(path) as opened:
            img = opened.convert("L" if channels == 1 else "RGB")
            if img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def decode_images(
    samples: Sequence[tuple[Path, int]],
    channels: int,
    size: tuple[int, int],
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Split, list[str]]:
    """Decoded files and the skipped ones, from the disk cache in ``cache_dir`` when current."""
    images, labels, skipped = cached_decode(
        samples, channels, size, cache_dir, lambda: _decode_all(samples, channels, size), log
    )
    return Split(images, labels), skipped


def _decode_all(
    samples: Sequence[tuple[Path, int]], channels: int, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode files in parallel threads (PIL releases the GIL)."""
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(pool.map(lambda s: _decode(s[0], channels, size), samples, chunksize=64))
    kept = [i for i, a in enumerate(arrays) if a is not None]
    skipped = [str(samples[i][0]) for i, a in enumerate(arrays) if a is None]
    if not kept:
        return torch.zeros(0, channels, *size, dtype=torch.uint8), torch.zeros(0).long(), skipped
    images = torch.from_numpy(np.stack([a for a in arrays if a is not None]))
    labels = torch.tensor([samples[i][1] for i in kept], dtype=torch.long)
    return images, labels, skipped


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rest, held_out): ``fraction`` of every class held out, chosen by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    rest, held = [], []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_held = round(len(idx) * fraction)
        if len(idx) > 1:
            n_held = min(max(n_held, 1), len(idx) - 1)
        held.append(idx[:n_held])
        rest.append(idx[n_held:])
    return torch.cat(rest).sort().values, torch.cat(held).sort().values


def _subset(split: Split, index: torch.Tensor) -> Split:
    return Split(split.images[index], split.labels[index])


def load_image_folder(
    root: Path,
    input_shape: tuple[int, int, int],
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> DatasetSplits:
    """Load ``root`` as ``train/`` + ``test/`` (or ``val/``), or as one tree split by seed.

    The validation split is always carved from the training images, so model selection never
    sees the test images the report quotes. With ``cache_dir`` the decoded tensors are kept on
    disk between runs (see :mod:`compressor.data_cache`).
    """
    root = Path(root)
    channels, height, width = input_shape
    size = (height, width)
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if (root / "train").is_dir():
        classes, train_files = scan_image_folder(root / "train")
        if test_dir is not None:
            test_classes, test_files = scan_image_folder(test_dir)
            if test_classes != classes:
                raise CompressorError(
                    f"{test_dir} classes {test_classes[:5]} differ from train classes {classes[:5]}"
                )
            full, skipped = decode_images(train_files, channels, size, cache_dir, log)
            test, skipped_test = decode_images(test_files, channels, size, cache_dir, log)
            skipped += skipped_test
            test_source = f"{test_dir.name}/"
        else:
            full, skipped = decode_images(train_files, channels, size, cache_dir, log)
            test = None
    else:
        classes, files = scan_image_folder(root)
        full, skipped = decode_images(files, channels, size, cache_dir, log)
        test = None
    if len(full) == 0:
        raise CompressorError(
            f"{root}: no readable images ({len(skipped)} files could not be decoded)"
        )
    if test is None:
        rest, held = stratified_split(full.labels, test_fraction, seed + 1)
        test, full = _subset(full, held), _subset(full, rest)
        test_source = f"held-out split ({test_fraction:.0%}, seed {seed + 1})"
    if len(test) == 0:
        raise CompressorError(f"{root}: the test split has no readable images")
    train_idx, val_idx = stratified_split(full.labels, val_fraction, seed)
    return DatasetSplits(
        train=_subset(full, train_idx),
        val=_subset(full, val_idx),
        test=test,
        class_names=classes,
        root=str(root),
        test_source=test_source,
        skipped=skipped,
    )


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 normalised with per-channel mean/std (on images' device)."""
    m, s = _channel_stats(tuple(mean), tuple(std), images.device)
    return (images.float().div_(255.0) - m) / s


@functools.lru_cache(maxsize=32)
def _channel_stats(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, 1, 1) mean and std on ``device``, made once: a per-step copy to a GPU would wait."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).to(device)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).to(device)
    return m, s


def augment(images: torch.Tensor, generator: torch.Generator, hflip: bool = True) -> torch.Tensor:
    """Random crop (zero padding of 1/8 of the side) and optional horizontal flip, batched.

    Works on uint8 (N, C, H, W) on any device; the generator must live on the same device.
    """
    n, _, h, w = images.shape
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dev = images.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    rows = (dy.view(n, 1) + torch.arange(h, device=dev).view(1, h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=dev).view(1, w)).view(n, 1, 1, w)
    batch = torch.arange(n, device=dev).view(n, 1, 1, 1)
    chan = torch.arange(images.shape[1], device=dev).view(1, -1, 1, 1)
    out = padded[batch, chan, rows, cols]
    if hflip:
        flip = torch.rand(n, generator=generator, device=dev) < 0.5
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)
    return out


def batches(
    n: int, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` items, shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]
