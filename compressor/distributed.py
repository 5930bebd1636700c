"""Multi-process training through PyTorch's own engine (``torchrun`` + DistributedDataParallel).

``torchrun --nproc_per_node N -m compressor run ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; this
module turns them into an initialised process group (NCCL on GPUs, gloo on CPUs) and offers the
few collectives the pipeline needs. Without those variables everything is a no-op, so the
single-process path has no distributed code in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group described by torchrun's environment (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def info() -> DistInfo:
    """The current process's place in the group (rank 0 of 1 when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of an epoch's order: disjoint across ranks, equal sizes (tail dropped)."""
    usable = (len(order) // world_size) * world_size
    return order[:usable][rank::world_size]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (no-op when not distributed)."""
    if info().world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_main(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (a picklable object such as a Selection)."""
    if info().world_size <= 1:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if info().world_size > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
