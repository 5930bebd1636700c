"""Did the timing get the CPU it asked for? Contention probes and the container's CPU allowance.

A latency measured while another process competes for the cores is slower than the model is,
and a ratio of two such measurements is biased toward 1 (measured here: 1.40x idle, 1.19x with
one of two cores busy). So every timing records how much CPU its process actually got:

- **CPU share**: process CPU time over wall time times the threads it expected to run. An idle
  host gives 0.99-1.00 (onnxruntime's intra-op workers spin between kernels); one busy core under
  a 2-thread profile gives 0.65-0.69. Below :data:`MIN_CPU_SHARE` the timing is *contended*.
- **CPU pressure** (``/proc/pressure/cpu`` "some", where the kernel has PSI): the fraction of
  wall time some task waited for a CPU. Recorded for the report, not decisive: on a shared host
  it also counts other tenants' waits (0.07-0.09 here while our own share was 0.99).

The expected thread count is the profile's ``intra_op_threads`` capped by what the container
may use (:func:`cpu_allowance`): the cgroup quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``),
the cpuset and the process's affinity. A profile asking for more threads than that gets one
warning line (:func:`thread_warning`), not a permanent "contended" verdict.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError

MIN_CPU_SHARE = 0.85  # idle 0.99-1.00, one busy core 0.65-0.69 (docs/selection.md)
MIN_CPU_SHARE_ENV = "COMPRESSOR_MIN_CPU_SHARE"  # overrides it; 0 never calls a timing contended
CGROUP_ROOT = Path("/sys/fs/cgroup")
PSI_FILE = Path("/proc/pressure/cpu")


@dataclass(frozen=True)
class CpuAllowance:
    """How many CPUs this process may use, and which limit set it."""

    cpus: float  # the smallest of quota, cpuset and affinity
    quota: float | None  # cgroup CPU quota in CPUs (None: unlimited or unreadable)
    cpuset: int | None  # CPUs in the cgroup's cpuset (None: unreadable)
    affinity: int  # CPUs in the process's affinity mask
    source: str  # "quota", "cpuset" or "affinity"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    import platform

    text = _read(cpuinfo) or ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def parse_cpu_list(text: str) -> int:
    """Number of CPUs in a kernel CPU list such as ``0-3,8,10-11``."""
    count = 0
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The cgroup's CPU quota in CPUs: v2 ``cpu.max`` ("max 100000" = none), else v1."""
    v2 = _read(root / "cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota_us = _read(root / "cpu" / "cpu.cfs_quota_us")
    period_us = _read(root / "cpu" / "cpu.cfs_period_us")
    if quota_us and period_us and int(quota_us) > 0:
        return int(quota_us) / int(period_us)
    return None


def cgroup_cpuset(root: Path = CGROUP_ROOT) -> int | None:
    for path in (root / "cpuset.cpus.effective", root / "cpuset" / "cpuset.effective_cpus",
                 root / "cpuset" / "cpuset.cpus"):  # fmt: skip
        text = _read(path)
        if text:
            return parse_cpu_list(text)
    return None


def cpu_allowance(root: Path = CGROUP_ROOT) -> CpuAllowance:
    """The CPUs this process may use: the tightest of quota, cpuset and affinity."""
    quota, cpuset = cgroup_quota(root), cgroup_cpuset(root)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    limits = [(float(affinity or 1), "affinity")]
    if cpuset is not None:
        limits.append((float(cpuset), "cpuset"))
    if quota is not None:
        limits.append((quota, "quota"))
    cpus, source = min(limits, key=lambda item: item[0])
    return CpuAllowance(cpus, quota, cpuset, int(affinity or 1), source)


def thread_warning(threads: int, allowance: CpuAllowance) -> str | None:
    """One line when the profile asks for more threads than the container may run at once."""
    if threads <= allowance.cpus:
        return None
    return (
        f"the profile asks for {threads} intra-op threads but this process may use only "
        f"{allowance.cpus:g} CPU(s) (limited by the {allowance.source}); latency here is slower "
        "than on the profile's device and contention is judged against "
        f"{expected_threads(threads, allowance)} thread(s)"
    )


def expected_threads(threads: int, allowance: CpuAllowance) -> int:
    """Threads that can run at once: the profile's, capped by the allowance (at least 1)."""
    return max(1, min(threads, math.floor(allowance.cpus + 1e-9)))


def psi_some_total(path: Path = PSI_FILE) -> int | None:
    """Microseconds some task waited for a CPU since boot (None without PSI)."""
    text = _read(path)
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("some"):
            for field in line.split():
                if field.startswith("total="):
                    return int(field[6:])
    return None


def min_cpu_share() -> float:
    """The share below which a timing is contended: :data:`MIN_CPU_SHARE`, or the value of
    ``COMPRESSOR_MIN_CPU_SHARE`` (0 turns the check off: the test suite, which checks what the
    tool decides rather than how fast the host is, and hosts whose owner accepts noisy
    decisions)."""
    text = os.environ.get(MIN_CPU_SHARE_ENV)
    if text is None or not text.strip():
        return MIN_CPU_SHARE
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise CompressorError(f"{MIN_CPU_SHARE_ENV}={text!r} is not a fraction between 0 and 1")
    return value


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """Instruction-set flags of this CPU (x86 ``flags`` or ARM ``Features``); empty if unknown."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


NCHWC_BLOCK_AVX512 = 16  # floats per channel block in onnxruntime's MLAS NCHWc kernels
NCHWC_BLOCK_DEFAULT = 8  # AVX2 (and the rounding kept elsewhere)


def channel_block(flags: set[str] | None = None) -> int:
    """The channel multiple onnxruntime's CPU convolutions run fastest at on this host.

    MLAS converts convolutions to its blocked NCHWc layout with a block of 16 floats where the
    CPU has AVX-512F and 8 with AVX2 (``platform.cpp``: ``NchwcBlockSize``) and computes whole
    blocks of channels, so a width off the block costs about what the next multiple does. Pruned
    widths rounded to 8 on an AVX-512 host removed MACs but little time (a 0.53x-MACs
    mobilenet_v3_small was 1.38x faster, rounded to 16 a 0.52x one was 1.66x:
    ``benchmarks/channel_block.py``, docs/pruning.md).
    """
    found = cpu_flags() if flags is None else flags
    return NCHWC_BLOCK_AVX512 if "avx512f" in found else NCHWC_BLOCK_DEFAULT


@dataclass(frozen=True)
class CpuUse:
    """What a timed window got: CPU share, pressure, and the verdict."""

    cpu_share: float
    psi_some: float | None
    threads: int
    wall_s: float

    @property
    def contended(self) -> bool:
        return self.cpu_share < min_cpu_share()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "contended": self.contended}


class CpuProbe:
    """Start before a timed window, :meth:`stop` after it (process CPU vs wall, PSI delta)."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.psi = psi_some_total()

    def stop(self) -> CpuUse:
        wall = max(time.perf_counter() - self.wall, 1e-9)
        cpu = time.process_time() - self.cpu
        psi_now = psi_some_total()
        psi = None
        if self.psi is not None and psi_now is not None:
            psi = round((psi_now - self.psi) / 1e6 / wall, 4)
        return CpuUse(round(cpu / wall / self.threads, 4), psi, self.threads, round(wall, 4))


def combine(uses: list[CpuUse]) -> CpuUse:
    """One verdict for several windows: wall-weighted share and pressure."""
    wall = sum(u.wall_s for u in uses) or 1e-9
    share = sum(u.cpu_share * u.wall_s for u in uses) / wall
    psi: float | None = None
    if all(u.psi_some is not None for u in uses):
        psi = round(sum((u.psi_some or 0.0) * u.wall_s for u in uses) / wall, 4)
    return CpuUse(round(share, 4), psi, uses[0].threads, round(wall, 4))
