"""Domain types shared by the agent, the collector and the tools.

Units are in the names (``_bytes``, ``_w``, ``_pct``, ``_s``); a value that could not be
measured is ``None``, never 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A process with a context on a GPU."""

    pid: int
    used_mem_bytes: int | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class JobInfo:
    """The Slurm job that holds a GPU."""

    job_id: str
    step: str = ""
    user: str = ""
    account: str = ""
    partition: str = ""
    name: str = ""
    qos: str = ""
    batch: bool = True
    requeue: bool = False
    start_time: int = 0  # unix seconds, 0 = unknown
    dask_scheduler: str = ""
    dask_worker: str = ""
    source: str = ""  # cgroup | environ | allocation | sim
    cpu_util_pct: float | None = None

    @property
    def is_dask_worker(self) -> bool:
        return bool(self.dask_scheduler and self.dask_worker)


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One instantaneous reading of one GPU (or MIG instance), as a sampler returns it."""

    uuid: str
    index: int
    name: str = ""
    parent_uuid: str = ""
    util_gpu_pct: float | None = None
    util_mem_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    power_w: float | None = None
    temperature_c: float | None = None
    processes: tuple[ProcessInfo, ...] = ()
    errors: tuple[str, ...] = ()  # e.g. ("gpu_lost",) when the sample failed
    # Further measurements by name (e.g. "sm_active_pct"); a name that could not be read is
    # left out, never 0. Names follow ``gpuwarden.common.extra``; they travel to the store.
    extra: Mapping[str, float] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class GpuWindow:
    """Aggregates of one GPU over one report window (what the agent sends)."""

    uuid: str
    index: int
    name: str = ""
    parent_uuid: str = ""
    samples: int = 0
    util_mean: float | None = None
    util_max: float | None = None
    util_min: float | None = None
    zero_frac: float | None = None
    mem_util_mean: float | None = None
    mem_used_max_bytes: int | None = None
    mem_total_bytes: int | None = None
    power_mean_w: float | None = None
    temperature_c: float | None = None
    processes: tuple[ProcessInfo, ...] = ()
    errors: tuple[str, ...] = ()
    job: JobInfo | None = None
    allocated: bool = False
    # Window mean and max of each ``GpuSample.extra`` field seen in the window (absent when
    # no sample of the window had it).
    extra_mean: Mapping[str, float] = field(default_factory=dict, hash=False)
    extra_max: Mapping[str, float] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class SlurmStatus:
    available: bool = True
    error: str = ""


@dataclass(frozen=True, slots=True)
class NodeReport:
    """One report window of one node: every GPU batched into one message."""

    node: str
    seq: int
    window_start: float
    window_end: float
    gpus: tuple[GpuWindow, ...] = ()
    slurm: SlurmStatus = field(default_factory=SlurmStatus)
    agent_id: str = ""
    agent_version: str = ""


@dataclass(frozen=True, slots=True)
class WindowRecord:
    """A stored window: one GPU over one report window of one node."""

    node: str
    window_start: float
    window_end: float
    gpu: GpuWindow
