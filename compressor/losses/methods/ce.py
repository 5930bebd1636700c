"""``ce``: cross-entropy on the labels only, the no-distillation baseline.

It registers no distillation term, so :class:`~compressor.losses.total.DistillationLoss` returns the
cross-entropy alone and ``compressor.train.loop`` can train without a teacher.
"""

from __future__ import annotations

from compressor.losses.methods.base import LossMethod

METHOD = LossMethod(
    name="ce",
    help="cross-entropy on the labels only, no teacher term",
    supports_bias_aware=False,
)
