"""Choosing the student: time each candidate's ONNX graph and pick the largest that fits
(:mod:`~compressor.selection.choose`), the bisection along the pruning trajectory
(:mod:`~compressor.selection.trajectory_search`), the selection memory that keeps a choice
stable on one host (:mod:`~compressor.selection.memory`) and the target-device latency
predictor (:mod:`~compressor.selection.target_calibration`).

May import :mod:`compressor.export`, :mod:`compressor.latency` and :mod:`compressor.models`.
"""
