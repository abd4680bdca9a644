"""What readers show, as plain dataclasses built from the query API's answers.

A view adds what every screen needs and nobody should compute twice: how each GPU is used
right now, the jobs on each node, the cluster's totals and Slurm's state in words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from gpuwarden.common.types import AuditRecord, ClusterSnapshot, GpuState, NodeState

# A GPU whose newest window reached this utilisation is shown as busy (the default policy's
# active_util_pct; the rules use the policy's own value).
BUSY_UTIL_PCT = 5.0


class GpuUse(StrEnum):
    BUSY = "busy"  # utilisation at or above BUSY_UTIL_PCT
    IDLE = "idle"  # processes on it, utilisation below BUSY_UTIL_PCT
    EMPTY = "empty"  # allocated to a job that runs nothing on it
    FREE = "free"  # no job, nothing running
    LOST = "lost"  # the agent lost the GPU
    UNKNOWN = "unknown"  # utilisation not measured


# one character per GPU in the node rows of `gpuwarden status`
GLYPHS: dict[GpuUse, str] = {
    GpuUse.BUSY: "#",
    GpuUse.IDLE: "~",
    GpuUse.EMPTY: "!",
    GpuUse.FREE: ".",
    GpuUse.LOST: "X",
    GpuUse.UNKNOWN: "?",
}


@dataclass(frozen=True, slots=True)
class GpuView:
    index: int
    uuid: str
    use: GpuUse
    name: str = ""
    parent_uuid: str = ""  # set for a MIG instance
    util_max_pct: float | None = None
    util_mean_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    power_w: float | None = None
    temperature_c: float | None = None
    processes: int = 0
    job_id: str = ""
    user: str = ""
    account: str = ""
    partition: str = ""
    errors: tuple[str, ...] = ()
    window_end: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)  # window means of extra fields


@dataclass(frozen=True, slots=True)
class JobOnNode:
    job_id: str
    user: str
    gpus: tuple[int, ...]  # GPU indices on this node
    dask_worker: bool = False


@dataclass(frozen=True, slots=True)
class NodeView:
    node: str
    connected: bool
    last_seen: float
    seen_ago_s: float | None  # None: never reported
    slurm: str  # ok | off | unavailable
    slurm_error: str
    gpus: tuple[GpuView, ...]
    jobs: tuple[JobOnNode, ...]


@dataclass(frozen=True, slots=True)
class GpuCounts:
    gpus: int = 0
    busy: int = 0
    idle: int = 0
    empty: int = 0
    free: int = 0
    lost: int = 0
    unknown: int = 0


@dataclass(frozen=True, slots=True)
class ClusterView:
    now: float
    windows_stored: int
    nodes: tuple[NodeView, ...]
    counts: GpuCounts


def gpu_use(state: GpuState) -> GpuUse:
    w = state.latest
    if "gpu_lost" in w.errors:
        return GpuUse.LOST
    if w.util_max is None:
        return GpuUse.UNKNOWN
    if w.util_max >= BUSY_UTIL_PCT:
        return GpuUse.BUSY
    if w.processes:
        return GpuUse.IDLE
    return GpuUse.EMPTY if (w.job is not None or w.allocated) else GpuUse.FREE


def gpu_view(state: GpuState) -> GpuView:
    w = state.latest
    job = w.job
    return GpuView(
        index=w.index,
        uuid=w.uuid,
        use=gpu_use(state),
        name=w.name,
        parent_uuid=w.parent_uuid,
        util_max_pct=w.util_max,
        util_mean_pct=w.util_mean,
        mem_used_bytes=w.mem_used_max_bytes,
        mem_total_bytes=w.mem_total_bytes,
        power_w=w.power_mean_w,
        temperature_c=w.temperature_c,
        processes=len(w.processes),
        job_id=job.job_id if job else "",
        user=job.user if job else "",
        account=job.account if job else "",
        partition=job.partition if job else "",
        errors=w.errors,
        window_end=state.window_end,
        extra=dict(w.extra_mean),
    )


def node_view(node: NodeState, now: float) -> NodeView:
    states = sorted(node.gpus, key=lambda s: (s.latest.index, s.latest.uuid))
    gpus = tuple(gpu_view(s) for s in states)
    jobs: dict[str, JobOnNode] = {}
    for state, g in zip(states, gpus, strict=True):
        job = state.latest.job
        if job is None:
            continue
        old = jobs.get(job.job_id)
        jobs[job.job_id] = JobOnNode(
            job_id=job.job_id,
            user=job.user,
            gpus=(*(old.gpus if old else ()), g.index),
            dask_worker=job.is_dask_worker or bool(old and old.dask_worker),
        )
    return NodeView(
        node=node.node,
        connected=node.connected,
        last_seen=node.last_seen,
        seen_ago_s=max(0.0, now - node.last_seen) if node.last_seen else None,
        slurm=node.slurm.state,
        slurm_error=node.slurm.error if node.slurm.state == "unavailable" else "",
        gpus=gpus,
        jobs=tuple(jobs.values()),
    )


def count_gpus(gpus: Iterable[GpuView]) -> GpuCounts:
    by_use = dict.fromkeys(GpuUse, 0)
    for g in gpus:
        by_use[g.use] += 1
    return GpuCounts(
        gpus=sum(by_use.values()),
        busy=by_use[GpuUse.BUSY],
        idle=by_use[GpuUse.IDLE],
        empty=by_use[GpuUse.EMPTY],
        free=by_use[GpuUse.FREE],
        lost=by_use[GpuUse.LOST],
        unknown=by_use[GpuUse.UNKNOWN],
    )


def cluster_view(snap: ClusterSnapshot) -> ClusterView:
    nodes = tuple(node_view(n, snap.now) for n in sorted(snap.nodes, key=lambda n: n.node))
    return ClusterView(
        now=snap.now,
        windows_stored=snap.windows_stored,
        nodes=nodes,
        counts=count_gpus(g for n in nodes for g in n.gpus),
    )


def idle_job_ids(records: Iterable[AuditRecord]) -> set[str]:
    """Jobs with a whole-allocation idle finding that the ladder acted on (or, in dry-run,
    would have)."""
    return {
        r.job_id
        for r in records
        if r.kind == "idle" and r.action != "none" and not r.detail.startswith("partly")
    }
