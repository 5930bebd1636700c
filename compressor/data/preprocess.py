"""The eval transform a model was trained with: part of the model's contract, not of the data.

A 224-px torchvision classifier expects ``Resize(256) + CenterCrop(224)`` + ImageNet mean/std;
squashing a 200x150 photo straight to 224x224 changes its aspect ratio and costs the teacher
accuracy (measured in docs/preprocessing.md). :class:`Preprocess` describes the transform once;
the same object decodes every split (teacher accuracy, bias statistics, validation, test, int8
calibration, ``compressor verify``) and is written into the ONNX metadata so a deployer can
reproduce it without compressor. The PIL operations reproduce ``torchvision.transforms``'
``Resize``/``CenterCrop`` on PIL images exactly (same sizes, rounding and resampling filter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from compressor.errors import CompressorError

RESIZE_MODES = ("center-crop", "squash", "letterbox")
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
CROP_FRACTION = 0.875  # torchvision's 224/256: the resize default is round(crop / 0.875)
SMALL_INPUT = 64  # below this side, images are squashed (CIFAR-style data is already that size)


@dataclass(frozen=True)
class Preprocess:
    """How a decoded image becomes the model's input (C, H, W).

    ``center-crop``: resize the shorter side to ``resize_size`` (default round(min(H, W) /
    0.875)), then crop the centre H x W (torchvision's eval transform). ``squash``: resize to
    H x W, ignoring the aspect ratio. ``letterbox``: fit inside H x W keeping the aspect ratio,
    pad with the mean colour (which normalises to zero). Pixels are scaled to [0, 1], then
    normalised with ``mean``/``std`` per channel.
    """

    size: tuple[int, int]  # (H, W) of the model input
    channels: int
    resize_mode: str
    resize_size: int | None
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        check_spec(self.resize_mode, self.interpolation, self.resize_size, self.size)
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise CompressorError(
                f"mean/std must have {self.channels} value(s) for {self.channels}-channel input, "
                f"got mean {list(self.mean)} and std {list(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise CompressorError(f"std values must be positive, got {list(self.std)}")

    @property
    def resolved_resize(self) -> int:
        """The shorter-side size of ``center-crop`` (the crop's own size for other modes)."""
        if self.resize_size is not None:
            return self.resize_size
        return round(min(self.size) / CROP_FRACTION)

    def apply(self, image: Image.Image) -> np.ndarray:
        """One PIL image (any mode) -> (C, H, W) uint8, before normalisation."""
        image = image.convert("L" if self.channels == 1 else "RGB")
        height, width = self.size
        resample = INTERPOLATIONS[self.interpolation]
        if self.resize_mode == "squash":
            if image.size != (width, height):
                image = image.resize((width, height), resample)
        elif self.resize_mode == "center-crop":
            image = _resize_shorter(image, self.resolved_resize, resample)
            image = _center_crop(image, height, width)
        else:
            image = _letterbox(image, height, width, resample, self._pad_colour())
        array = np.asarray(image, dtype=np.uint8)
        return array[None] if self.channels == 1 else array.transpose(2, 0, 1)

    def _pad_colour(self) -> int | tuple[int, ...]:
        colour = tuple(round(255 * m) for m in self.mean)
        return colour[0] if self.channels == 1 else colour

    def describe(self) -> str:
        """One line a person can reproduce, e.g. 'Resize(256, bilinear) + CenterCrop(224x224)'."""
        height, width = self.size
        if self.resize_mode == "center-crop":
            how = f"Resize(shorter side {self.resolved_resize}, {self.interpolation}) + "
            how += f"CenterCrop({height}x{width})"
        elif self.resize_mode == "squash":
            how = f"Resize({height}x{width}, {self.interpolation}, aspect ratio not kept)"
        else:
            how = f"Letterbox({height}x{width}, {self.interpolation}, mean-colour padding)"
        mean = ", ".join(f"{m:.4g}" for m in self.mean)
        std = ", ".join(f"{s:.4g}" for s in self.std)
        return f"{how}, /255, mean ({mean}), std ({std})"

    def to_metadata(self) -> dict[str, Any]:
        """JSON-ready description (ONNX metadata, bundles, reports)."""
        out = asdict(self)
        out["size"] = list(self.size)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        out["resize_size"] = self.resolved_resize
        out["scale"] = "1/255"
        out["channel_order"] = "L" if self.channels == 1 else "RGB"
        out["layout"] = "NCHW"
        out["description"] = self.describe()
        return out

    def cache_tag(self) -> str:
        """What the decoded pixels depend on (not mean/std: they apply after decoding)."""
        height, width = self.size
        return (
            f"{self.channels}x{height}x{width}-{self.resize_mode}-{self.resolved_resize}"
            f"-{self.interpolation}"
        )


def check_spec(
    resize_mode: str, interpolation: str, resize_size: int | None, size: tuple[int, int]
) -> None:
    """Errors for a spec that cannot produce the model's input (named, one line each)."""
    if resize_mode not in RESIZE_MODES:
        raise CompressorError(
            f"unknown resize mode {resize_mode!r}; allowed: {', '.join(RESIZE_MODES)}"
        )
    if interpolation not in INTERPOLATIONS:
        raise CompressorError(
            f"unknown interpolation {interpolation!r}; allowed: {', '.join(INTERPOLATIONS)}"
        )
    if resize_size is not None and resize_size < 1:
        raise CompressorError(f"resize size must be a positive number of pixels, got {resize_size}")
    if resize_size is not None and resize_mode == "center-crop" and resize_size < max(size):
        raise CompressorError(
            f"resize size {resize_size} cannot produce the {size[0]}x{size[1]} input: resizing "
            f"the shorter side to {resize_size} leaves less than {size[0]}x{size[1]} to crop from "
            f"(use a resize size >= {max(size)}, or another resize mode)"
        )


def default_resize_mode(size: Sequence[int]) -> str:
    """torchvision's convention for large inputs; small (CIFAR-sized) images are used whole."""
    return "center-crop" if min(size) >= SMALL_INPUT else "squash"


def resolve_preprocess(
    size: tuple[int, int],
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    *layers: Mapping[str, Any] | None,
) -> Preprocess:
    """Merge spec layers, most specific first (CLI, then the teacher bundle, then the profile).

    Each layer may set ``resize_mode`` ("auto" means unset), ``resize_size`` (0 means unset)
    and ``interpolation``; the first layer that sets a key wins.
    """
    chosen: dict[str, Any] = {}
    for layer in layers:
        for key in ("resize_mode", "resize_size", "interpolation"):
            value = (layer or {}).get(key)
            if key not in chosen and value not in (None, "auto", 0, ""):
                chosen[key] = value
    return Preprocess(
        size=(int(size[0]), int(size[1])),
        channels=channels,
        resize_mode=chosen.get("resize_mode", default_resize_mode(size)),
        resize_size=int(chosen["resize_size"]) if "resize_size" in chosen else None,
        interpolation=chosen.get("interpolation", "bilinear"),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


def _resize_shorter(image: Image.Image, short: int, resample: Image.Resampling) -> Image.Image:
    """``torchvision.transforms.Resize(short)`` on a PIL image (same rounding, same filter)."""
    width, height = image.size
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    if (new_w, new_h) == (width, height):
        return image
    return image.resize((new_w, new_h), resample)


def _center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """``torchvision.transforms.CenterCrop((height, width))`` on a PIL image."""
    img_w, img_h = image.size
    if width > img_w or height > img_h:  # torchvision pads with zeros first
        canvas = Image.new(image.mode, (max(width, img_w), max(height, img_h)), 0)
        canvas.paste(image, ((width - img_w) // 2 if width > img_w else 0,
                             (height - img_h) // 2 if height > img_h else 0))  # fmt: skip
        image, (img_w, img_h) = canvas, canvas.size
    top = round((img_h - height) / 2.0)
    left = round((img_w - width) / 2.0)
    return image.crop((left, top, left + width, top + height))


def _letterbox(
    image: Image.Image,
    height: int,
    width: int,
    resample: Image.Resampling,
    fill: int | tuple[int, ...],
) -> Image.Image:
    img_w, img_h = image.size
    scale = min(width / img_w, height / img_h)
    new_w, new_h = max(1, round(img_w * scale)), max(1, round(img_h * scale))
    if (new_w, new_h) != (img_w, img_h):
        image = image.resize((new_w, new_h), resample)
    canvas = Image.new(image.mode, (width, height), fill)
    canvas.paste(image, ((width - new_w) // 2, (height - new_h) // 2))
    return canvas
