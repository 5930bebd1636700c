"""The training settings (:class:`TrainConfig`) and the precisions they may name.

Torch-free, imported by the CLI before any command runs (``--help`` stays fast) and by every
training module below :mod:`compressor.train.loop` without importing the loop itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from compressor.errors import CompressorError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")  # cuda:N: GPU N (checked where devices resolve)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: resolved per device (accel.resolve_precision)


def check_precision(requested: str) -> None:
    """One clear line for a precision name that does not exist."""
    if requested not in PRECISIONS:
        raise CompressorError(
            f"unknown precision '{requested}' (choose one of: {', '.join(PRECISIONS)})"
        )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (SGD with Nesterov momentum, cosine learning rate per step)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    hflip: bool = True
    augment: bool = True  # random crop (+ flip); off makes teacher logits constant per image
    cache_teacher: bool = True  # without augmentation, run the teacher once, not every step
    eval_batch_size: int | None = None  # None: 128 on CPU, 512 on CUDA (inference_batch_size)
    precision: str = "auto"  # auto: bf16 on CUDA (fp16 + grad scaler without bf16), fp32 on CPU
    compile: bool | None = None  # None: auto (CUDA graphs on CUDA, eager on CPU; resolve_compile)
    deterministic: bool = False  # deterministic cuDNN/cuBLAS algorithms (accel.device_settings)
    channels_last: bool | None = None  # None: the device's default (NHWC on CUDA and CPU)
    crop_scale: tuple[float, float] = (0.25, 1.0)  # RandomResizedCrop area range (>= 64 px)
    bn_recalibration_images: int = 1024  # precise BN before each validation; 0 turns it off
    stop_after: int | None = None  # end after this many epochs of the `epochs` schedule (a pilot)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "eval_batch_size": self.eval_batch_size is None or self.eval_batch_size >= 1,
            "crop_scale": len(self.crop_scale) == 2
            and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
            "bn_recalibration_images": self.bn_recalibration_images >= 0,
            "stop_after": self.stop_after is None or 1 <= self.stop_after <= self.epochs,
        }
        for name, ok in checks.items():
            if not ok:
                raise CompressorError(f"invalid training setting {name}={getattr(self, name)!r}")
        check_precision(self.precision)
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))
