"""One training epoch: the optimisation step, its metrics, its seeds and its learning rate.

Nothing here names a loss method: the step calls a
:class:`~compressor.losses.total.DistillationLoss`,
sums the per-sample terms it returns and leaves its counters alone; what the bias-aware wrapper
adds to the history comes from the loss object too.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compressor.compute import distributed
from compressor.compute.inference import DeviceImages
from compressor.compute.speed import autocast, mark_step, to_memory_format
from compressor.data.splits import normalize, train_augment
from compressor.losses.total import DistillationLoss, LossOutput

if TYPE_CHECKING:
    from compressor.config.train import TrainConfig


@dataclass
class TrainStep:
    """Everything one optimisation step touches, so the epoch loop reads as a recipe."""

    model: nn.Module  # the student as trained: maybe DDP-wrapped, maybe compiled
    teacher: nn.Module | None
    teacher_cache: torch.Tensor | None
    loss_fn: DistillationLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    images: DeviceImages  # the training split as the device sees it
    labels: torch.Tensor  # on the training device
    augment_gen: torch.Generator
    cfg: TrainConfig
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    precision: str
    channels_last: bool
    compile_mode: str | None = None  # accel.resolve_compile: "reduce-overhead" = CUDA graphs


@dataclass
class EpochSums:
    """Metrics of one epoch, summed over samples on the device and then over ranks."""

    terms: dict[str, torch.Tensor]
    wrong_per_class: torch.Tensor
    seen_per_class: torch.Tensor
    correct: torch.Tensor

    @classmethod
    def zeros(cls, classes: int, device: torch.device) -> EpochSums:
        return cls(
            {}, torch.zeros(classes, device=device), torch.zeros(classes, device=device),
            torch.zeros((), device=device),
        )  # fmt: skip

    def add_terms(self, out: LossOutput, batch: int) -> None:
        """Add the loss and its per-sample terms, weighted by the batch's samples."""
        for key, value in {"loss": out.loss, **out.terms}.items():
            weighted = value.detach().float() * batch
            self.terms[key] = self.terms[key] + weighted if key in self.terms else weighted

    def all_reduce(self) -> None:
        """Sum every metric over the ranks (a no-op on one process)."""
        for value in (*self.terms.values(), self.wrong_per_class, self.seen_per_class,
                      self.correct):  # fmt: skip
            distributed.all_reduce_sum(value)

    def history_row(self, epoch: int, loss_fn: DistillationLoss) -> dict[str, Any]:
        """The history row of one epoch (per-sample means of the loss terms, bias counts)."""
        seen = float(self.seen_per_class.sum())
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update({k: float(v) / seen for k, v in self.terms.items()})
        n_wrong = int(self.wrong_per_class.sum())
        row.update(
            {
                "b": loss_fn.bias_weight_at(epoch),
                "train_top1": float(self.correct) / seen,
                "samples": int(seen),
                "teacher_wrong_fraction": n_wrong / seen,
                "n_rectified": n_wrong if loss_fn.rectifies else 0,
                "teacher_wrong_per_class": (
                    self.wrong_per_class / self.seen_per_class.clamp_min(1)
                ).tolist(),
            }
        )
        return row


def train_epoch(
    step: TrainStep, order: torch.Tensor, batch_size: int, epoch: int, classes: int
) -> EpochSums:
    """One pass over ``order``; metrics stay on the device (no host synchronisation)."""
    cfg, device = step.cfg, step.device
    sums = EpochSums.zeros(classes, device)
    for k, (idx, batch) in enumerate(step.images.batches(order, batch_size)):
        mark_step(step.compile_mode)
        if cfg.augment:
            batch = train_augment(batch, step.augment_gen, cfg.hflip, cfg.crop_scale)
        x = to_memory_format(normalize(batch, step.mean, step.std), step.channels_last)
        y = step.labels[idx]
        with autocast(device, step.precision):
            s_logits = step.model(x)
            host_idx = order[k * batch_size : (k + 1) * batch_size]  # no device-to-host copy
            t_logits = _teacher_logits(step, x, idx, host_idx, s_logits)
            out = step.loss_fn(s_logits.float(), t_logits.float(), y, epoch)
        step.optimizer.zero_grad(set_to_none=True)
        step.scaler.scale(out.loss).backward()  # scaling is a no-op unless fp16
        step.scaler.step(step.optimizer)
        step.scaler.update()
        step.scheduler.step()
        sums.add_terms(out, y.shape[0])
        if step.teacher is not None:
            sums.wrong_per_class.index_add_(0, y, (t_logits.argmax(1) != y).float())
        sums.seen_per_class.index_add_(0, y, torch.ones_like(y, dtype=torch.float))
        sums.correct += (s_logits.argmax(1) == y).sum()
    sums.all_reduce()  # metrics over all ranks
    return sums


def _teacher_logits(
    step: TrainStep,
    x: torch.Tensor,
    idx: torch.Tensor,
    host_idx: torch.Tensor,
    s_logits: torch.Tensor,
) -> torch.Tensor:
    """The teacher's logits for this batch: cached, computed, or (no teacher) the student's.

    ``idx`` are the batch's rows on the device, ``host_idx`` the same rows on the host.
    """
    if step.teacher is None:
        return s_logits.detach()
    if step.teacher_cache is not None:
        return cached_logits(step.teacher_cache, idx, host_idx)
    with torch.inference_mode():
        t_logits = step.teacher(x)
    return t_logits.clone()  # a normal tensor again, usable by autograd


def cached_logits(cache: torch.Tensor, idx: torch.Tensor, host_idx: torch.Tensor) -> torch.Tensor:
    """Rows of the teacher-logit cache, which lives beside the images (device or host).

    A host cache is indexed with the host copy of the rows (``host_idx``): reading the device
    indices back would stall the GPU queue every step. The rows travel in pinned memory.
    """
    if cache.device == idx.device:
        return cache[idx]
    rows = cache[host_idx]
    if idx.device.type == "cuda":
        rows = rows.pin_memory()
    return rows.to(idx.device, non_blocking=True)


def augment_seed(seed: int, rank: int, epoch: int) -> int:
    """The augmentation generator's seed for one rank's epoch.

    Derived from (seed, rank, epoch) alone, so a resumed run, on any rank, draws the same crops
    as an uninterrupted one without saving generator states, and ranks never share a stream.
    """
    digest = hashlib.blake2b(f"{seed}/{rank}/{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # below 2**63: valid for every generator


def lr_factor(step: int, total_steps: int, warmup_steps: int, world_size: int) -> float:
    """Per-step multiplier of the peak learning rate: cosine decay to 0 over ``total_steps``.

    With several processes the peak is ``lr * world_size`` (linear scaling) and the first
    ``warmup_steps`` ramp linearly from ``lr`` up to it (Goyal et al. 2017).
    """
    cosine = 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if step >= warmup_steps:
        return cosine
    return cosine * (1 + (world_size - 1) * step / warmup_steps) / world_size
