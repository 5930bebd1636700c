"""The ``compressor`` command line (Typer): ``run``, ``demo``, ``distill``
(:mod:`~compressor.cli.main`, the entry point), the single-stage commands
(:mod:`~compressor.cli.stage_commands`), shared options and the one-line error handling with
its exit codes (:mod:`~compressor.cli.app`).

The top: imports torch-heavy packages only inside commands, so every ``--help`` stays
torch-free. Nothing imports it.
"""
