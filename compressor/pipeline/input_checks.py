"""Checks that a model, a profile and a dataset can work together, before anything runs.

``run``, ``distill``, ``select`` and ``verify`` all call these, so a mismatch reads the same
whichever command found it.
"""

from __future__ import annotations

from collections.abc import Sequence

from compressor.errors import CompressorError
from compressor.latency.profiles import LatencyProfile


def check_channels(what: str, channels: int, profile: LatencyProfile) -> None:
    """``what`` (e.g. "teacher") must take the profile's number of input channels."""
    if channels != profile.input_shape[0]:
        raise CompressorError(
            f"{what} expects {channels}-channel input but profile '{profile.name}' "
            f"has {profile.input_shape[0]} channel(s) (input.shape = {list(profile.input_shape)})"
        )


def check_input_shape(what: str, shape: Sequence[int] | None, profile: LatencyProfile) -> None:
    """A model exported for one input shape is not verified under a profile with another."""
    if shape and tuple(shape) != tuple(profile.input_shape):
        raise CompressorError(
            f"{what} was exported for input {list(shape)}, profile '{profile.name}' has "
            f"{list(profile.input_shape)}"
        )


def check_classes(
    what: str, classes: int, names: Sequence[str] | None, data_names: Sequence[str], data: str
) -> None:
    """The model's classes must be the data's: same count and, when recorded, same names."""
    if classes != len(data_names):
        raise CompressorError(
            f"class count mismatch: {what} has {classes} classes, data {data} has {len(data_names)}"
        )
    if names and list(names) != list(data_names):
        raise CompressorError(
            f"class names differ: {what} {list(names)[:4]}..., data {list(data_names)[:4]}..."
        )
