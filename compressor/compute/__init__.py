"""Where and how tensors are computed: devices and torchrun process groups
(:mod:`~compressor.compute.distributed`), speed settings (precision, memory format, compile:
:mod:`~compressor.compute.speed`), batched predictions (:mod:`~compressor.compute.inference`)
and BatchNorm statistics (:mod:`~compressor.compute.batchnorm`).

Shared by training, pruning and verification; may import :mod:`compressor.config` and
:mod:`compressor.data`.
"""
