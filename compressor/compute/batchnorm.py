"""BatchNorm statistics that describe the data, whatever the schedule length ("precise BN").

A BatchNorm layer's running mean/variance are an exponential average with the layer's
``momentum``. torchvision's MobileNetV3 and EfficientNet use momentum 0.01, tuned for
ImageNet-length schedules: after a few hundred steps the running statistics are still mostly
their initial values (mean 0, variance 1), so the model in eval mode predicts one class while
its training accuracy rises. Recomputing the statistics as a plain average over a fixed set of
un-augmented training images before every validation (and so before export) fixes this for any
family and any schedule, at the cost of one forward pass over those images (Wu & Johnson,
"Rethinking 'Batch' in BatchNorm", 2021, section 3: precise BN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer that tracks running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    sum_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Replace running statistics by their average over ``batches`` (normalised inputs).

    Each layer's momentum is set to ``None`` (cumulative average: every batch's statistics
    weigh the same) for the pass and restored afterwards; the model's train/eval mode is
    restored too. With ``sum_over_ranks`` (an in-place all-reduce), each rank passes its own
    share of the batches and the per-batch averages are combined over ranks, weighted by each
    rank's batch count: the statistics of the whole set, the same on every rank. Returns the
    number of images used over all ranks (0 when the model has no BatchNorm layer, which is
    then left untouched).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += int(x.shape[0])
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.train(was_training)
    if sum_over_ranks is not None:
        seen = _average_over_ranks(layers, seen, sum_over_ranks)
    return seen


def _average_over_ranks(
    layers: list[_BatchNorm], seen: int, sum_over_ranks: Callable[[torch.Tensor], torch.Tensor]
) -> int:
    """Combine each rank's running averages into the average over every rank's batches."""
    device = layers[0].running_mean.device
    counts = torch.stack([layer.num_batches_tracked for layer in layers]).to(device).double()
    flat = torch.cat(
        [torch.cat([layer.running_mean, layer.running_var]).double() * n
         for layer, n in zip(layers, counts, strict=True)]
        + [counts, torch.tensor([float(seen)], dtype=torch.float64, device=device)]
    )  # fmt: skip
    sum_over_ranks(flat)
    total_seen = int(flat[-1].item())
    counts = flat[-1 - len(layers) : -1]
    offset = 0
    for layer, n in zip(layers, counts, strict=True):
        size = layer.running_mean.numel()
        stats = flat[offset : offset + 2 * size] / n.clamp_min(1)
        offset += 2 * size
        layer.running_mean.copy_(stats[:size])
        layer.running_var.copy_(stats[size:])
        layer.num_batches_tracked.fill_(int(n.item()))
    return total_seen
