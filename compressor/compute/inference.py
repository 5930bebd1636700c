"""Inference: predictions of a model over a split, batched on a device, and their accuracy.

Used by training (the teacher pass, validation), verification (the PyTorch reference logits)
and the benchmarks. Images are uint8 (N, C, H, W) tensors or splits (``compressor.data.splits``),
normalised here batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from compressor.compute import distributed
from compressor.compute.speed import autocast, resolve_channels_last, to_memory_format
from compressor.data.splits import ImageSplit, Split, as_split, normalize


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, CPU otherwise; an explicit CUDA request must be met.

    Under torchrun the local rank picks the GPU (``cuda``: GPU r, ``cuda:N``: GPU N+r), the same
    rule :func:`compressor.compute.distributed.init_distributed` binds the process with.
    """
    return distributed.rank_device(name)


def inference_batch_size(device: torch.device) -> int:
    """512 on a GPU; 128 on CPU, where larger batches fall out of cache (measured on a 2-core
    Xeon with a cifar_resnet20_w32 teacher: about 750 images/s at 128, 540 at 512)."""
    return 512 if device.type == "cuda" else 128


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor | ImageSplit,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device | None = None,
    batch_size: int | None = None,
    channels_last: bool | None = None,
) -> torch.Tensor:
    """Logits (N, classes) on CPU for uint8 images (N, C, H, W) or a split, in eval mode."""
    device = device or next(model.parameters()).device
    batch_size = batch_size or inference_batch_size(device)
    channels_last = resolve_channels_last(channels_last, device)
    model = model.to(device)
    was_training = model.training
    model.eval()
    split = as_split(images)
    order = torch.arange(len(split))
    pin = device.type == "cuda"
    outs = [
        model(to_memory_format(normalize(batch.to(device), mean, std), channels_last)).float().cpu()
        for batch in split.iter_batches(order, batch_size, pin)
    ]
    model.train(was_training)
    if not outs:
        return torch.zeros(0, 0)
    return torch.cat(outs)


class DeviceImages:
    """A split as the training device sees it.

    In-memory images stay resident on the device when they fit (on CPU: the tensor itself, no
    copy); otherwise, and for streamed splits, each batch is copied from pinned host memory
    without blocking. Indices come back on the device, for labels and cached teacher logits.
    """

    GPU_FRACTION = 0.4  # of the free GPU memory an in-memory split may occupy

    def __init__(self, split: ImageSplit, device: torch.device) -> None:
        self.split = split
        self.device = device
        self.resident: torch.Tensor | None = None
        if isinstance(split, Split):
            if device.type != "cuda":
                self.resident = split.images.to(device)
            elif split.images.numel() <= self.GPU_FRACTION * torch.cuda.mem_get_info(device)[0]:
                self.resident = split.images.to(device, non_blocking=True)

    def __len__(self) -> int:
        return len(self.split)

    def read(self, index: torch.Tensor) -> torch.Tensor:
        """A few rows, on the device."""
        if self.resident is not None:
            return self.resident[index.to(self.device)]
        return self.split.read(index).to(self.device)

    def batches(
        self, order: torch.Tensor, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(indices, uint8 images) on the device, ``batch_size`` rows of ``order`` at a time."""
        order_on_device = order.to(self.device, non_blocking=True)  # one copy per pass
        if self.resident is not None:
            for start in range(0, len(order), batch_size):
                idx = order_on_device[start : start + batch_size]
                yield idx, self.resident[idx]
            return
        pin = self.device.type == "cuda"
        for k, batch in enumerate(self.split.iter_batches(order, batch_size, pin)):
            idx = order_on_device[k * batch_size : (k + 1) * batch_size]
            yield idx, batch.to(self.device, non_blocking=True)


@torch.no_grad()
def predict_sharded(
    model: nn.Module,
    images: DeviceImages,
    *,
    logits: bool,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    classes: int,
    batch_size: int,
    channels_last: bool,
    precision: str,
) -> torch.Tensor:
    """Logits (N, classes) float32, or predicted classes (N,) int64, on CPU, on every rank.

    Each rank computes one block of the rows, under the training precision (autocast). Logits
    go to host memory batch by batch, so the teacher's pass over a large training split never
    holds (N, classes) on a GPU. Under DDP the model's buffers are first taken from rank 0
    (BatchNorm statistics drift apart between ranks during an epoch) and the blocks are summed
    over ranks. With one process the logits equal :func:`predict_logits` at fp32.
    """
    dinfo = distributed.info()
    if dinfo.world_size > 1:
        distributed.broadcast_buffers(model)
    n, device = len(images), images.device
    block = distributed.span(n, dinfo.rank, dinfo.world_size)
    shared = logits and dinfo.world_size > 1 and distributed.one_machine()
    if shared:  # one host copy per machine, filled by every rank (distributed.shared_host_zeros)
        out = distributed.shared_host_zeros((n, classes))
    elif logits:
        out = torch.zeros(n, classes)
    else:
        out = torch.zeros(n, dtype=torch.long, device=device)
    rows = torch.arange(block.start, block.stop)
    was_training = model.training
    model.eval()
    with autocast(device, precision):
        for k, (idx, batch) in enumerate(images.batches(rows, batch_size)):
            y = model(to_memory_format(normalize(batch, mean, std), channels_last)).float()
            if logits:  # host rows from the host order: no read-back of device indices
                out[rows[k * batch_size : (k + 1) * batch_size]] = y.cpu()
            else:
                out[idx] = y.argmax(1)
    model.train(was_training)
    if shared:
        distributed.barrier()  # every rank's rows are written
        return out
    return sum_over_ranks(out, device).cpu()


def sum_over_ranks(out: torch.Tensor, device: torch.device, rows: int = 65536) -> torch.Tensor:
    """Sum ``out`` over ranks in chunks of ``rows`` rows (each rank filled only its block)."""
    if distributed.info().world_size <= 1:
        return out
    if out.device == device:
        return distributed.all_reduce_sum(out)
    for start in range(0, out.shape[0], rows):
        chunk = out[start : start + rows].to(device)
        out[start : start + rows] = distributed.all_reduce_sum(chunk).cpu()
    return out


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose argmax equals the label."""
    return accuracy(logits.argmax(1), labels)


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of predicted classes equal to the label (0 for no rows)."""
    if labels.numel() == 0:
        return 0.0
    return float((predictions == labels).float().mean())
