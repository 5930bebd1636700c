"""The teacher's one pass over the un-augmented training and validation images.

It serves two things: how wrong the teacher is on the training split, per class (the bias the
report shows and bias-aware losses remove), and, when training without augmentation, the
teacher's logits for every training image, so the teacher is not run again every epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compressor.compute.inference import DeviceImages, accuracy
from compressor.data.splits import DatasetSplits

# predict(model, images, logits=...) -> logits (N, classes) or classes (N,), on CPU:
# compressor.compute.inference.predict_sharded with the run's settings bound
Predict = Callable[..., torch.Tensor]


@dataclass
class TeacherPass:
    """What the teacher pass gives the training run.

    Attributes:
        logit_cache: the teacher's logits for every training image (row = image index),
            beside the images (on the device only if they are resident there); ``None``
            unless asked for.
        statistics: ``DistillResult``'s teacher fields (validation top-1, training error,
            per class, confusion matrix).
    """

    logit_cache: torch.Tensor | None
    statistics: dict[str, Any]


def run_teacher_pass(
    teacher: nn.Module | None,
    train: DeviceImages,
    val: DeviceImages,
    data: DatasetSplits,
    predict: Predict,
    cache_logits: bool,
) -> TeacherPass:
    """Run the teacher once over ``train`` and ``val``; keep its logits when ``cache_logits``.

    Without a teacher (supervised training) the statistics are those of a teacher that is
    always right, and nothing is cached.
    """
    if teacher is None:
        return TeacherPass(None, teacher_statistics(data, None, None))
    train_out = predict(teacher, train, logits=cache_logits)
    train_pred = train_out.argmax(1) if cache_logits else train_out
    val_pred = predict(teacher, val, logits=False)
    cache = None
    if cache_logits:  # beside the images: on the device only if they are resident there
        cache = train_out.to(train.device) if train.resident is not None else train_out
    return TeacherPass(cache, teacher_statistics(data, train_pred, val_pred))


def teacher_statistics(
    data: DatasetSplits, train_pred: torch.Tensor | None, val_pred: torch.Tensor | None
) -> dict[str, Any]:
    """How wrong the teacher is on the (un-augmented) training split: the bias to remove.

    The predictions are the teacher's classes on the training and validation splits; ``None``
    for supervised training, which has no teacher and so no bias to measure.
    """
    classes = len(data.class_names)
    labels = data.train.labels
    if train_pred is None or val_pred is None:
        pred = labels.clone()
        val_top1 = 1.0
    else:
        pred = train_pred
        val_top1 = accuracy(val_pred, data.val.labels)
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    return {
        "teacher_val_top1": val_top1,
        "teacher_train_error": 1.0 - float((pred == labels).float().mean()) if len(labels) else 0.0,
        "teacher_train_error_per_class": per_class_error(pred, labels, classes),
        "teacher_train_confusion": confusion.tolist(),
    }


def per_class_error(predictions: torch.Tensor, labels: torch.Tensor, classes: int) -> list[float]:
    """Error rate of each class (0 for classes absent from ``labels``)."""
    wrong = torch.zeros(classes).index_add_(0, labels, (predictions != labels).float())
    count = torch.bincount(labels, minlength=classes).clamp_min(1).float()
    return (wrong / count).tolist()
