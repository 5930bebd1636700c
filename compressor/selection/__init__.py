"""Choosing the student: time the teacher and each candidate's ONNX graph and pick the largest
that fits (:mod:`~compressor.selection.choose`, with the timers in
:mod:`~compressor.selection.timers`), derived or fresh under ``--student-source``
(:mod:`~compressor.selection.sources`), the search along the pruning trajectory
(:mod:`~compressor.selection.trajectory_search`), the records and rules of the table
(:mod:`~compressor.selection.table`), the selection memory that keeps a choice stable on one
host (:mod:`~compressor.selection.memory`) and the target-device latency predictor
(:mod:`~compressor.selection.target_calibration`).

May import :mod:`compressor.export`, :mod:`compressor.latency` and :mod:`compressor.models`.
"""
