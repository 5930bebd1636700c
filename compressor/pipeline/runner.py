"""Runs the stages of :mod:`compressor.pipeline.stages` in order, under torchrun too.

Every input is validated (profile, teacher, data, output folder) and the student is selected
*before* the run folder is created, so bad input leaves nothing behind. Each stage then writes
its artifacts atomically into the run folder (:class:`compressor.run_folder.RunFolder`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from compressor.compute import distributed
from compressor.config.run import RunConfig, config_dict
from compressor.errors import CompressorError
from compressor.pipeline.context import Log, RunContext, open_context
from compressor.pipeline.results import required
from compressor.pipeline.stage import Stage
from compressor.pipeline.stages import STAGES, downstream_artifacts, stage_named, upstream_stages
from compressor.report.model import Report
from compressor.run_folder import RunFolder
from compressor.train.loop import DistillResult

T = TypeVar("T")


@dataclass
class RunOutcome:
    """What the CLI needs to print and which exit code to use."""

    report: Report
    out: Path

    @property
    def exit_code(self) -> int:
        return self.report.exit_code


def _on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result, or its failure, to every rank.

    Every failure is forwarded, not only a CompressorError: a bug or Ctrl-C on rank 0 must stop
    the other ranks now, not after a collective's timeout. Rank 0 re-raises its own exception
    (with its traceback); the others raise the CompressorError, or a RankZeroFailure naming the
    exception. The other ranks wait in a gloo collective (distributed.broadcast_from_main).
    """
    if distributed.info().world_size <= 1:
        return fn()
    payload: Any = None
    failure: BaseException | None = None
    if distributed.info().is_main:
        try:
            payload = fn()
        except BaseException as exc:  # forwarded below, then re-raised unchanged
            failure = exc
            payload = (
                exc
                if isinstance(exc, CompressorError)
                else distributed.RankZeroFailure(f"rank 0 failed: {type(exc).__name__}: {exc}")
            )
    payload = distributed.broadcast_from_main(payload)
    if failure is not None:
        raise failure
    if isinstance(payload, CompressorError | distributed.RankZeroFailure):
        raise payload
    return payload


def run_pipeline(cfg: RunConfig, log: Log = lambda _msg: None) -> RunOutcome | None:
    """Run every stage; under torchrun, rank 0 returns the outcome and the others None."""
    distributed.init_distributed(cfg.train.device)
    try:
        return _run_stages(cfg, log if distributed.info().is_main else lambda _msg: None)
    finally:
        distributed.shutdown()


def _run_stages(cfg: RunConfig, log: Log) -> RunOutcome | None:
    """Run (or, with ``cfg.resume``, reuse) each stage in order. Raises CompressorError.

    A resumed run reuses the leading stages whose records exist; once one stage runs, every
    later one runs too, so nothing downstream of new work is ever reused. Training itself
    continues from its last completed epoch.
    """
    RunFolder(cfg.out).check(cfg.overwrite, cfg.resume)
    ctx = open_context(cfg, log)
    reusing = cfg.resume
    for index, stage in enumerate(STAGES):
        if not distributed.info().is_main and not any(s.every_rank for s in STAGES[index:]):
            return None  # rank 0 alone exports, verifies and reports
        reusing = reusing and stage.resumable and RunFolder.all_exist(stage.records(ctx.folder))
        if reusing:
            ctx.results.store(stage.name, stage.load(ctx))
            ctx.reused.append(stage.name)
        else:
            shared = any(later.every_rank for later in STAGES[index + 1 :])
            ctx.results.store(stage.name, _run_on_ranks(stage, ctx, shared))
    return RunOutcome(report=required(ctx.results.report, "report"), out=cfg.out)


def _run_on_ranks(stage: Stage, ctx: RunContext, shared: bool) -> Any:
    """Every rank runs an ``every_rank`` stage. Any other runs on rank 0 alone; its result is
    broadcast when the other ranks still need it (``shared``: they run a later stage)."""
    if stage.every_rank:
        return stage.run(ctx)
    return _on_main(lambda: stage.run(ctx)) if shared else stage.run(ctx)


def distill_stage_only(cfg: RunConfig, log: Log = lambda _msg: None) -> DistillResult | None:
    """Re-run only distillation in an existing run folder (``compressor distill``).

    Artifacts of distillation and of every later stage are removed first, so the folder never
    mixes a new student with an old export or report; ``compressor export`` and ``verify`` (or
    ``run --resume``) produce them again. Under torchrun every rank trains its shard and rank 0
    alone changes the folder; rank 0 returns the result and the others None.
    """
    distributed.init_distributed(cfg.train.device)
    try:
        main = distributed.info().is_main
        result = rerun_stage("distill", cfg, log if main else lambda _msg: None)
        return result if main else None
    finally:
        distributed.shutdown()


def rerun_stage(name: str, cfg: RunConfig, log: Log) -> Any:
    """Run stage ``name`` alone from the results its upstream stages left in the folder."""
    folder = RunFolder(cfg.out)
    upstream = upstream_stages(name)
    for stage in upstream:
        missing = [path.name for path in stage.records(folder) if not path.is_file()]
        if missing:
            raise CompressorError(f"{cfg.out} has no {missing[0]}: run `compressor run` first")
    cfg = replace(cfg, resume=False)
    ctx = open_context(cfg, log)
    for stage in upstream:
        ctx.results.store(stage.name, stage.load(ctx))

    def clear_downstream() -> None:
        RunFolder.remove(downstream_artifacts(name, folder))
        folder.write_marker(config_dict(cfg))

    _on_main(clear_downstream)  # rank 0 writes; the others wait until it has
    return stage_named(name).run(ctx)
