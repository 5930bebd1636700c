"""Artifacts out and checked: ONNX export with metadata (:mod:`~compressor.export.to_onnx`),
int8 quantization and its keep-or-drop decision (:mod:`~compressor.export.int8`), and
verification of an exported model with onnxruntime (:mod:`~compressor.export.verify`).

May import :mod:`compressor.compute`, :mod:`compressor.data` and :mod:`compressor.latency`.
"""
