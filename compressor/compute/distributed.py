"""Multi-process training through PyTorch's own engine (``torchrun`` + DistributedDataParallel).

``torchrun --nproc_per_node N -m compressor run ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; this
module turns them into an initialised process group and offers the few collectives the pipeline
needs. Without those variables everything is a no-op, so the single-process path has no
distributed code in it.

Device and backend follow the *requested* device, resolved per rank (:func:`rank_device`):

* ``cpu``: every rank on the CPU, backend gloo (even on a host with GPUs).
* ``cuda`` / ``auto`` on a host with a GPU per local rank: local rank r on ``cuda:r``, backend
  ``cpu:gloo,cuda:nccl`` (NCCL for the gradients, gloo for CPU tensors).
* more local ranks than GPUs: ranks share GPUs round-robin (``cuda:r % count``). NCCL refuses
  two ranks on one GPU, so the backend is gloo, which also reduces CUDA tensors (slower: meant
  for checks such as a 2-rank run on a one-GPU machine, not for speed).
* ``cuda:N`` under torchrun: local rank r on ``cuda:N+r`` (GPUs N.. for this job), refused if
  that runs past the visible GPUs.

Every collective has an explicit timeout (``COMPRESSOR_DIST_TIMEOUT``, seconds, default 1800).
Waits for work done by rank 0 alone (timing candidates, writing the run folder) go through a
separate gloo group with its own, longer timeout (``COMPRESSOR_DIST_WAIT_TIMEOUT``, default
7200): a gloo wait blocks in a socket read, where an NCCL wait would spin a CPU core next to
the one rank 0 is timing candidates on.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from compressor.config.train import DEVICE_CHOICES
from compressor.errors import CompressorError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_WAIT_TIMEOUT_S = 7200.0
_wait_group: Any = None  # gloo group for rank-0-only waits (None: use the default group)


class RankZeroFailure(RuntimeError):
    """Raised on the other ranks when rank 0 failed with an exception that is not a
    CompressorError (rank 0 itself raises the original, with its traceback)."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class RankPlan:
    """Where this rank trains and which backend the process group uses."""

    device: torch.device
    backend: str
    shares_gpu: bool = False


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _local_layout() -> tuple[int, int]:
    """(local rank, local world size) from torchrun's environment; (0, 1) without it."""
    if _env_int("WORLD_SIZE", 1) <= 1:
        return 0, 1
    local_rank = _env_int("LOCAL_RANK", 0)
    return local_rank, max(_env_int("LOCAL_WORLD_SIZE", 1), local_rank + 1)


def processes_per_host() -> int:
    """How many processes of this job share this machine (torchrun's LOCAL_WORLD_SIZE)."""
    return _local_layout()[1]


def rank_device(requested: str) -> torch.device:
    """The device this process trains on for ``--device requested`` (see the module doc).

    Single process: ``auto`` is CUDA when present, else CPU; ``cuda:N`` is GPU N. Under torchrun
    the local rank picks the GPU. An explicit CUDA request that cannot be met is an error.
    """
    return plan_rank(requested).device


def plan_rank(requested: str) -> RankPlan:
    local_rank, local_world = _local_layout()
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise CompressorError(
            f"unknown device '{requested}' (use one of: {', '.join(DEVICE_CHOICES)})"
        ) from exc
    if device.type != "cuda":
        return RankPlan(device, "gloo")
    if not torch.cuda.is_available():
        raise CompressorError(f"device '{requested}' requested but CUDA is not available")
    count = torch.cuda.device_count()
    if device.index is not None:
        index = device.index + local_rank
        if index >= count:
            ranks = f" with {local_world} local ranks" if local_world > 1 else ""
            raise CompressorError(
                f"device '{requested}'{ranks} needs GPU {index} but {count} GPU(s) are visible "
                "(under torchrun, cuda:N puts local rank r on GPU N+r; use cuda, or "
                "CUDA_VISIBLE_DEVICES)"
            )
        shares = device.index + local_world > count
        return RankPlan(
            torch.device("cuda", index), "gloo" if shares else "cpu:gloo,cuda:nccl", shares
        )
    shares = local_world > count
    backend = "gloo" if shares else "cpu:gloo,cuda:nccl"
    return RankPlan(torch.device("cuda", local_rank % count), backend, shares)


def _seconds(name: str, default: float) -> datetime.timedelta:
    raw = os.environ.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError as exc:
        raise CompressorError(f"{name} must be a number of seconds, got {raw!r}") from exc
    return datetime.timedelta(seconds=value)


def init_distributed(requested_device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment (idempotent).

    ``requested_device`` is the run's ``--device``: it decides the backend and whether this
    rank binds a GPU (``torch.cuda.set_device`` only for CUDA ranks).
    """
    global _wait_group
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    local_rank = _env_int("LOCAL_RANK", 0)
    if not dist.is_initialized():
        plan = plan_rank(requested_device)
        if plan.device.type == "cuda":
            torch.cuda.set_device(plan.device)
        timeout = _seconds("COMPRESSOR_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)
        dist.init_process_group(backend=plan.backend, timeout=timeout)
        wait_timeout = max(
            timeout, _seconds("COMPRESSOR_DIST_WAIT_TIMEOUT", DEFAULT_WAIT_TIMEOUT_S)
        )
        _wait_group = dist.new_group(backend="gloo", timeout=wait_timeout)
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


def span(n: int, rank: int, world_size: int) -> range:
    """This rank's contiguous block of ``range(n)`` (blocks differ by at most one item)."""
    per, extra = divmod(n, world_size)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (rank < extra))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (no-op when not distributed)."""
    if info().world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) in ``module`` on every rank, in place."""
    if info().world_size > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_from_main(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (a picklable object such as a Selection).

    Goes through the gloo wait group: the other ranks may wait here for as long as rank 0
    works alone.
    """
    if info().world_size <= 1:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=0, group=_wait_group)
    return box[0]


def barrier() -> None:
    if info().world_size > 1:
        dist.barrier(group=_wait_group)


def shutdown() -> None:
    global _wait_group
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _wait_group = None


def one_machine() -> bool:
    """Whether every rank runs on this machine (torchrun's LOCAL_WORLD_SIZE = WORLD_SIZE)."""
    world = info().world_size
    return int(os.environ.get("LOCAL_WORLD_SIZE", world)) == world


def shared_host_zeros(shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor of zeros in host memory that every rank on this machine shares.

    Backed by a file that rank 0 creates in the temporary folder and unlinks once every rank
    has mapped it: the page cache holds one copy per machine instead of one per rank (5 GB
    each for ImageNet's teacher logits), the kernel may write it back to disk under memory
    pressure, and nothing is left behind if a rank dies. A write by one rank is seen by the
    others after a :func:`barrier`. Call on every rank; needs :func:`one_machine`.
    """
    import tempfile

    numel = 1
    for size in shape:
        numel *= size
    if numel == 0:
        return torch.zeros(shape)
    path = None
    if info().is_main:
        fd, path = tempfile.mkstemp(prefix="compressor-shared-", suffix=".f32")
        os.ftruncate(fd, numel * 4)  # zeros, without writing them
        os.close(fd)
    path = broadcast_from_main(path)
    tensor = torch.from_file(path, shared=True, size=numel, dtype=torch.float32).view(shape)
    barrier()  # every rank has mapped it
    if info().is_main:
        os.unlink(path)
    return tensor
