"""Distillation: the loop (:mod:`~compressor.train.loop`), its one-time setup, one epoch's step,
the resumable training state, the teacher's pass over the data and ``--method auto``'s recipes
(:mod:`~compressor.train.recipes`).

May import :mod:`compressor.compute`, :mod:`compressor.config`, :mod:`compressor.data`,
:mod:`compressor.losses` and :mod:`compressor.run_folder`; not selection, export or reports.
"""
