"""Latency on the CPU target: profiles (the TOML budgets), the one timing code
(:mod:`~compressor.latency.timing`), paired A/B timing with a confidence interval
(:mod:`~compressor.latency.paired`) and the contention and container probes
(:mod:`~compressor.latency.cpu`).

Knows nothing about models: it times ONNX bytes. May import :mod:`compressor.data` (a
profile's preprocessing section is checked by :mod:`compressor.data.preprocess`).
"""
