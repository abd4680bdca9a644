"""Domain types shared by the agent, the collector and the tools.

Units are in the names (``_bytes``, ``_w``, ``_pct``, ``_s``); a value that could not be
measured is ``None``, never 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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


# IDENTITY_NOTE: ``minor_number`` is the N of the GPU's /dev/nvidiaN (for a MIG instance, its
# parent GPU's), the order Slurm's GRES indices follow on most sites, which NVML's index order
# (PCI bus order) need not match; ``gpu_instance_id`` is a MIG instance's GPU instance id and
# ``mig_caps_minor`` the minor of its /dev/nvidia-caps/nvidia-capN access file. None: unknown
# (not a MIG instance, or the source cannot tell).


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
    # Identity that attribution maps Slurm's GRES indices with (see IDENTITY_NOTE below).
    minor_number: int | None = None
    gpu_instance_id: int | None = None
    mig_caps_minor: int | None = None


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
    minor_number: int | None = None  # as in GpuSample
    gpu_instance_id: int | None = None
    mig_caps_minor: int | None = None


# What an agent reports as its Slurm error when it does not attribute GPUs to Slurm at all.
SLURM_NOT_CONFIGURED = "slurm not configured"


@dataclass(frozen=True, slots=True)
class SlurmStatus:
    available: bool = True
    error: str = ""

    @property
    def state(self) -> str:
        """``ok``, ``off`` (the agent does not use Slurm) or ``unavailable`` (it tried and
        failed: ``error`` says why)."""
        if self.available:
            return "ok"
        return "off" if self.error == SLURM_NOT_CONFIGURED else "unavailable"


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


@dataclass(frozen=True, slots=True)
class GpuState:
    """The newest window of one GPU in the collector's live view."""

    window_end: float
    latest: GpuWindow


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node in the collector's live view."""

    node: str
    last_seen: float = 0.0  # window end of the newest report, unix seconds
    last_seq: int = 0
    connected: bool = False  # an agent stream is open
    slurm: SlurmStatus = field(default_factory=SlurmStatus)
    gpus: tuple[GpuState, ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """The whole live view at one moment."""

    now: float
    nodes: tuple[NodeState, ...] = ()
    windows_stored: int = 0


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Stored windows matching a history query, oldest first."""

    windows: tuple[WindowRecord, ...] = ()
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One decision of the action ladder (taken or, in dry-run, not taken) with its evidence."""

    ts: float
    job_id: str
    kind: str  # idle | partly_idle | underused | advice
    action: str  # ladder.Action value
    outcome: str  # ladder.Status value
    dry_run: bool
    gpus: tuple[str, ...]
    detail: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    actor: str = "gpuwarden"
    # whose job it is and where it runs (empty when unknown, as for records written before
    # these fields existed)
    user: str = ""
    account: str = ""
    partition: str = ""
    nodes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["gpus"] = list(self.gpus)
        out["nodes"] = list(self.nodes)
        out["evidence"] = dict(self.evidence)
        return out


# What an admin may ask the collector to do to one job by hand (``AdminService``).
ADMIN_ACTIONS = ("warn", "release_dask_worker", "requeue", "requeuehold", "exempt")


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """An admin's request to act on one job; ``duration_s`` and ``reason`` for ``exempt``."""

    job_id: str
    action: str
    duration_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ActionReply:
    """What the collector did with an :class:`ActionRequest` (as its audit record says)."""

    ok: bool
    outcome: str
    detail: str
    actor: str = ""
    dry_run: bool = False
