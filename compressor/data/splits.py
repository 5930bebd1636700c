"""Image data: ImageFolder trees as seeded train/val/test splits, decoded in memory or streamed.

Datasets that fit (CIFAR-sized, the embedded digits, a few thousand photos) are decoded once
into ``uint8`` tensors of shape (N, C, H, W): normalising per batch is far faster than a
per-sample DataLoader, and the same tensors can be moved to a GPU. Larger ones are streamed
from disk by DataLoader workers (:mod:`compressor.data.streaming`); the choice is automatic
(:func:`compressor.data.streaming.choose_storage`) unless forced. Both kinds of split answer
``read`` and ``iter_batches`` with the same pixels. Broken or non-image files are skipped and
counted (the count goes into the report) rather than aborting a long job.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from compressor.data.cache import cached_decode
from compressor.data.preprocess import SMALL_INPUT, Preprocess, resolve_preprocess
from compressor.data.streaming import (
    StorageChoice,
    StreamedSplit,
    choose_storage,
    decode_file,
    default_workers,
    streamed_split,
)
from compressor.errors import CompressorError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class Split:
    """Images (N, C, H, W) uint8 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])

    def read(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 (len(index), C, H, W) rows."""
        return self.images[index]

    def iter_batches(
        self, order: torch.Tensor, batch_size: int, pin_memory: bool = False
    ) -> Iterator[torch.Tensor]:
        """uint8 batches of the rows in ``order`` (pinned for a fast copy to a GPU)."""
        for start in range(0, len(order), batch_size):
            batch = self.images[order[start : start + batch_size]]
            yield batch.pin_memory() if pin_memory else batch


ImageSplit = Split | StreamedSplit  # in memory or streamed from disk: same questions, same pixels


def as_split(images: torch.Tensor | ImageSplit) -> ImageSplit:
    """A bare uint8 tensor as an (unlabelled) in-memory split; splits pass through."""
    if isinstance(images, torch.Tensor):
        return Split(images, torch.zeros(images.shape[0], dtype=torch.long))
    return images


@dataclass
class DatasetSplits:
    """Train / validation / test splits of one dataset, plus where they came from."""

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    class_names: list[str]
    root: str
    test_source: str  # "test/", "val/" or "held-out split (seed N)"
    skipped: list[str] = field(default_factory=list)
    preprocess: Preprocess | None = None  # the eval transform every split was decoded with
    storage: StorageChoice | None = None  # in memory or streamed, and why

    def describe(self) -> dict[str, object]:
        storage = self.storage.to_dict() if self.storage else {"storage": "memory"}
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
            "preprocess": self.preprocess.to_metadata() if self.preprocess else None,
            **storage,
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


def default_preprocess(input_shape: tuple[int, int, int]) -> Preprocess:
    """The transform used when the caller states none (mean/std do not affect decoding)."""
    channels, height, width = input_shape
    return resolve_preprocess((height, width), channels, (0.5,) * channels, (0.5,) * channels)


def decode_images(
    samples: Sequence[tuple[Path, int]],
    channels: int,
    size: tuple[int, int],
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
    preprocess: Preprocess | None = None,
) -> tuple[Split, list[str]]:
    """Decoded files and the skipped ones, from the disk cache in ``cache_dir`` when current."""
    spec = preprocess or default_preprocess((channels, *size))
    images, labels, skipped = cached_decode(
        samples, spec.cache_tag(), cache_dir, lambda: _decode_all(samples, spec), log
    )
    return Split(images, labels), skipped


def _decode_all(
    samples: Sequence[tuple[Path, int]], preprocess: Preprocess
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode files in parallel threads (PIL releases the GIL)."""
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(pool.map(lambda s: decode_file(s[0], preprocess), samples, chunksize=64))
    kept = [i for i, a in enumerate(arrays) if a is not None]
    skipped = [str(samples[i][0]) for i, a in enumerate(arrays) if a is None]
    if not kept:
        shape = (0, preprocess.channels, *preprocess.size)
        return torch.zeros(shape, dtype=torch.uint8), torch.zeros(0).long(), skipped
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


def load_image_folder(
    root: Path,
    input_shape: tuple[int, int, int],
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
    preprocess: Preprocess | None = None,
    storage: str = "memory",
    processes_per_host: int = 1,
) -> DatasetSplits:
    """Load ``root`` as ``train/`` + ``test/`` (or ``val/``), or as one tree split by seed.

    Every split is decoded with the same eval transform ``preprocess`` (default: centre crop
    for inputs of 64 px and more, a plain resize below). The validation split is always carved
    from the training images, so model selection never sees the test images the report quotes.
    ``storage`` is ``memory`` (decode everything now; with ``cache_dir`` the decoded tensors
    are kept on disk between runs, see :mod:`compressor.data.cache`), ``stream`` (decode batch
    by batch when asked) or ``auto`` (:func:`compressor.data.streaming.choose_storage`).
    """
    root = Path(root)
    channels, height, width = input_shape
    spec = preprocess or default_preprocess(input_shape)
    if spec.size != (height, width) or spec.channels != channels:
        raise ValueError(f"preprocess is for {spec.channels}x{spec.size}, input is {input_shape}")
    classes, train_files, test_files, test_dir = _layout(root)
    choice = choose_storage(
        storage, len(train_files) + len(test_files or ()), input_shape, processes_per_host
    )
    if log and storage == "auto":
        log(f"data: {choice.reason}")

    def load(files: list[tuple[Path, int]]) -> tuple[ImageSplit, list[str]]:
        if choice.mode == "stream":
            return streamed_split(files, spec, default_workers(processes_per_host))
        return decode_images(files, channels, (height, width), cache_dir, log, spec)

    full, skipped = load(train_files)
    test = None
    if test_files is not None:
        test, skipped_test = load(test_files)
        skipped += skipped_test
    if len(full) == 0:
        raise CompressorError(
            f"{root}: no readable images ({len(skipped)} files could not be decoded)"
        )
    if test is None:
        rest, held = stratified_split(full.labels, test_fraction, seed + 1)
        test, full = full.subset(held), full.subset(rest)
        test_source = f"held-out split ({test_fraction:.0%}, seed {seed + 1})"
    else:
        test_source = f"{test_dir.name}/" if test_dir else "test/"
    if len(test) == 0:
        raise CompressorError(f"{root}: the test split has no readable images")
    train_idx, val_idx = stratified_split(full.labels, val_fraction, seed)
    return DatasetSplits(
        train=full.subset(train_idx),
        val=full.subset(val_idx),
        test=test,
        class_names=classes,
        root=str(root),
        test_source=test_source,
        skipped=skipped,
        preprocess=spec,
        storage=choice,
    )


def _layout(
    root: Path,
) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]] | None, Path | None]:
    """(classes, training files, test files or None, test folder): ``train/`` + ``test/`` or
    ``val/``, ``train/`` alone, or one flat tree of class folders."""
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not (root / "train").is_dir():
        classes, files = scan_image_folder(root)
        return classes, files, None, None
    classes, train_files = scan_image_folder(root / "train")
    if test_dir is None:
        return classes, train_files, None, None
    test_classes, test_files = scan_image_folder(test_dir)
    if test_classes != classes:
        raise CompressorError(
            f"{test_dir} classes {test_classes[:5]} differ from train classes {classes[:5]}"
        )
    return classes, train_files, test_files, test_dir


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


def random_resized_crop(
    images: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
    attempts: int = 10,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop (+ optional flip), batched, on uint8 (N, C, H, W).

    Each image gets a crop of ``scale`` of its area with aspect ratio in ``ratio`` (log-uniform),
    resized back to H x W bilinearly by one ``grid_sample`` call for the whole batch (the flip
    is folded into the same affine map); as in torchvision, after ``attempts`` misses the whole
    image is used. Works on any device; the generator must live on the same device. The images
    are the stored eval crops, so crops come from the region the eval transform keeps.
    """
    n, _, h, w = images.shape
    dev = images.device
    target = float(h * w) * torch.empty(n, attempts, device=dev).uniform_(
        scale[0], scale[1], generator=generator
    )
    log_r = torch.empty(n, attempts, device=dev).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    cw = torch.sqrt(target * torch.exp(log_r)).round()
    ch = torch.sqrt(target / torch.exp(log_r)).round()
    ok = (cw >= 1) & (ch >= 1) & (cw <= w) & (ch <= h)
    found = ok.any(1)
    pick = ok.float().argmax(1, keepdim=True)
    cw = torch.where(found, cw.gather(1, pick).view(n), torch.full((n,), float(w), device=dev))
    ch = torch.where(found, ch.gather(1, pick).view(n), torch.full((n,), float(h), device=dev))
    x0 = (torch.rand(n, generator=generator, device=dev) * (w - cw + 1)).floor()
    y0 = (torch.rand(n, generator=generator, device=dev) * (h - ch + 1)).floor()
    sign = torch.ones(n, device=dev)
    if hflip:
        sign = torch.where(torch.rand(n, generator=generator, device=dev) < 0.5, -sign, sign)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = sign * cw / w  # output pixel centres -> crop pixel centres
    theta[:, 0, 2] = (2 * x0 + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * y0 + ch) / h - 1
    grid = torch.nn.functional.affine_grid(theta, [n, images.shape[1], h, w], align_corners=False)
    out = torch.nn.functional.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


def train_augment(
    images: torch.Tensor,
    generator: torch.Generator,
    hflip: bool = True,
    crop_scale: tuple[float, float] = (0.25, 1.0),
) -> torch.Tensor:
    """The training augmentation suited to the input size: pad-crop for small images (CIFAR
    recipe), RandomResizedCrop for inputs of 64 px and more (torchvision's ImageNet recipe)."""
    if min(images.shape[-2:]) >= SMALL_INPUT:
        return random_resized_crop(images, generator, crop_scale, hflip=hflip)
    return augment(images, generator, hflip)
