"""Which epoch's weights the loop keeps: the best on validation, the later one on a tie."""

from __future__ import annotations

import torch
from torch import nn

from compressor.train.loop import _Progress


def _epochs(progress: _Progress, model: nn.Module, val_top1s: list[float]) -> None:
    for epoch, val_top1 in enumerate(val_top1s):
        with torch.no_grad():
            model.weight.fill_(epoch + 1)  # the weights say which epoch they are from
        progress.record({"val_top1": val_top1}, epoch, torch.ones(3, dtype=torch.bool), model)


def test_a_tie_keeps_the_later_epoch_and_a_drop_keeps_the_best() -> None:
    """Measured in docs/pruning.md: three epochs tied at 62.67% on 150 validation images and
    the first of them, epoch 1, was kept; the later epoch has trained longer at a lower rate."""
    model = nn.Linear(1, 1, bias=False)
    progress = _Progress(best_state={})
    _epochs(progress, model, [0.6267, 0.62, 0.6267, 0.6067, 0.6267, 0.62])
    assert progress.best_epoch == 5 and progress.best_val == 0.6267
    assert float(progress.best_state["weight"]) == 5.0
    assert len(progress.history) == 6


def test_a_strictly_better_epoch_wins_wherever_it_is() -> None:
    model = nn.Linear(1, 1, bias=False)
    progress = _Progress(best_state={})
    _epochs(progress, model, [0.70, 0.65, 0.69])
    assert progress.best_epoch == 1 and float(progress.best_state["weight"]) == 1.0
