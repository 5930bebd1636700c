"""Short schedules: BatchNorm statistics must describe the data when the student is evaluated."""

from __future__ import annotations

import torch
from torch import nn

from compressor.compute.batchnorm import recalibrate_batchnorm
from compressor.compute.inference import predict_logits, top1
from compressor.data.splits import DatasetSplits, Split, normalize
from compressor.losses.total import LossConfig
from compressor.models.registry import build_model
from compressor.train.loop import TrainConfig, distill

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _colour_split(n_per_class: int, seed: int) -> Split:
    """Three classes told apart by their dominant colour channel, with noise: learnable in a
    few dozen steps, so any eval-mode failure is the BatchNorm statistics, not the task."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for cls in range(3):
        x = torch.randint(40, 120, (n_per_class, 3, 64, 64), generator=g)
        x[:, cls] += 100
        images.append(x.clamp(0, 255).to(torch.uint8))
        labels.append(torch.full((n_per_class,), cls))
    return Split(torch.cat(images), torch.cat(labels))


def _splits() -> DatasetSplits:
    return DatasetSplits(
        train=_colour_split(32, 0),
        val=_colour_split(8, 1),
        test=_colour_split(8, 2),
        class_names=["r", "g", "b"],
        root="generated",
        test_source="generated",
    )


def _train(bn_images: int) -> tuple[nn.Module, DatasetSplits]:
    torch.manual_seed(0)
    student = build_model("mobilenet_v3_small_x0.5", 3)
    data = _splits()
    config = TrainConfig(
        epochs=4, batch_size=16, lr=0.05, device="cpu", augment=False,
        bn_recalibration_images=bn_images,
    )  # fmt: skip
    result = distill(None, student, data, MEAN, STD, LossConfig(method="ce"), config)
    return result.student, data


def test_short_schedule_student_is_accurate_in_eval_mode() -> None:
    """A mobilenet_v3_small student trained for 24 steps: with precise BN its eval-mode accuracy
    matches its train-mode (batch-statistics) accuracy; with torchvision's momentum 0.01 alone
    the running statistics are still near their initial values and it is far worse."""
    student, data = _train(bn_images=1024)
    x = normalize(data.train.images, MEAN, STD)
    student.train()
    with torch.no_grad():
        train_mode = top1(student(x), data.train.labels)
    student.eval()
    eval_mode = top1(predict_logits(student, data.train.images, MEAN, STD), data.train.labels)
    held_out = top1(predict_logits(student, data.test.images, MEAN, STD), data.test.labels)
    assert train_mode >= 0.9
    assert eval_mode >= train_mode - 0.05 and held_out >= 0.9

    stale, _ = _train(bn_images=0)
    stale_eval = top1(predict_logits(stale, data.test.images, MEAN, STD), data.test.labels)
    assert stale_eval < held_out - 0.2  # the failure the recalibration exists to fix


def test_recalibration_is_the_average_of_batch_statistics_and_restores_state() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.01))
    model.eval()
    batches = [torch.randn(8, 3, 5, 5) * (i + 1) + i for i in range(3)]
    used = recalibrate_batchnorm(model, iter(batches))
    bn = model[1]
    assert used == 24 and bn.momentum == 0.01 and not model.training
    with torch.no_grad():
        feats = [model[0](b) for b in batches]
    expected_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    expected_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected_mean)
    torch.testing.assert_close(bn.running_var, expected_var)
    assert recalibrate_batchnorm(nn.Linear(2, 2), iter([torch.zeros(1, 2)])) == 0
