"""The run: the :class:`~compressor.pipeline.stage.Stage` contract and the context every stage
reads (:mod:`~compressor.pipeline.context`), the stages in order
(:mod:`~compressor.pipeline.stages`, :mod:`~compressor.pipeline.distill_stage`), the runner, the
report builder, and the library side of the single-stage commands
(:mod:`~compressor.pipeline.single_stage`).

May import every package below it; only :mod:`compressor.cli` imports it.
"""
