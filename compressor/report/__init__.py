"""Reports: the typed :class:`~compressor.report.model.Report` and its verdict, report.md
(:mod:`~compressor.report.markdown`), report.html with its charts, verify.md, JUnit XML, the
provenance every report carries, and :mod:`~compressor.report.writer` for the run's three files.

Renders a report; never sees the run (the pipeline builds the report,
:mod:`compressor.pipeline.report_builder`). May import :mod:`compressor.export` (gate records),
:mod:`compressor.latency` (the CPU's name) and :mod:`compressor.run_folder`.
"""
