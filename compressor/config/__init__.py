"""Run, training and loss settings as plain dataclasses: the bottom of the package.

Owns :class:`~compressor.config.run.RunConfig` (what ``compressor run`` needs and run.json
keeps), :class:`~compressor.config.train.TrainConfig` and
:class:`~compressor.config.loss.LossConfig`.
Torch-free and imports nothing from the project but :mod:`compressor.errors`, so the CLI can
build its options and ``--help`` without loading torch, and every other package may import it.
"""
