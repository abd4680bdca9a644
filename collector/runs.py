"""What the engine works on: one observed window (:class:`Observation`) and one run of a
job (:class:`JobRun`), with the rules that say which run a window belongs to."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from gpuwarden.collector.activity import window_activity
from gpuwarden.collector.findings import Profile, profile_of
from gpuwarden.collector.policy import Policy
from gpuwarden.collector.rules import Allocation, AllocationTracker
from gpuwarden.common.types import JobInfo, WindowRecord

RunKey = tuple[str, int]  # (job id, start time; 0 = unknown)


class Observation(NamedTuple):
    """What the engine reads of one stored window (see :func:`observe`)."""

    node: str
    uuid: str
    gpu_index: int
    job: JobInfo | None
    start: float
    end: float
    util_max_pct: float | None  # None: unknown (a lost GPU, an unsupported field)
    util_mean_pct: float | None
    mem_used_bytes: int | None
    mem_total_bytes: int | None
    attributed: bool  # False: the node could not ask Slurm; a missing job says nothing
    sm_active_max_pct: float | None = None  # profiling counters (docs/profiling.md)
    profile: Profile | None = None
    processes: int | None = None  # processes on the GPU; None: unknown
    mig: bool = False  # a MIG slice (no NVML utilisation: see activity.py)

    def activity(self, policy: Policy) -> bool | None:
        """Whether this window was active under ``policy``; None: unknown."""
        return window_activity(
            policy,
            self.util_max_pct,
            self.sm_active_max_pct,
            mig=self.mig,
            processes=self.processes,
            mem_used_bytes=self.mem_used_bytes,
            mem_total_bytes=self.mem_total_bytes,
        )[0]


def observe(rec: WindowRecord, attributed: bool = True) -> Observation:
    g = rec.gpu
    lost = "gpu_lost" in g.errors
    mig = g.uuid.startswith("MIG-") or bool(g.parent_uuid)
    return Observation(
        rec.node,
        g.uuid,
        g.index,
        g.job,
        rec.window_start,
        rec.window_end,
        None if lost else g.util_max,
        g.util_mean,
        g.mem_used_max_bytes,
        g.mem_total_bytes,
        attributed,
        None if lost else g.extra_max.get("sm_active_pct"),
        None if lost else profile_of(g.extra_mean),
        None if lost or g.samples == 0 else len(g.processes),
        mig,
    )


def run_key(job: JobInfo) -> RunKey:
    return (job.job_id, job.start_time)


def same_run(a: RunKey, b: RunKey) -> bool:
    """The same run of a job: same id, and the same start unless one of them does not know
    it (an agent that could not ask Slurm reports start 0 and fewer facts)."""
    return a[0] == b[0] and (a[1] == b[1] or a[1] == 0 or b[1] == 0)


def job_facts(job: JobInfo) -> tuple[object, ...]:
    """The job facts the ladder reads (not the per-window CPU use)."""
    return (
        job.user,
        job.account,
        job.partition,
        job.qos,
        job.name,
        job.batch,
        job.requeue,
        job.dask_scheduler,
        job.dask_worker,
    )


@dataclass(slots=True, eq=False)
class JobRun:
    """One run of a job: its tracker and where it stands."""

    key: RunKey
    policy: Policy
    tracker: AllocationTracker
    facts: tuple[object, ...]
    job: JobInfo  # the facts object last seen (a cheap identity check per window)
    last_seen: float | None = None
    dirty: bool = False
    stopped: bool = False  # an action was taken (or would have been): not evaluated again
    ended: bool = False
    end_ts: float | None = None
    action_ts: float | None = None
    # the findings the ladder took at the run's last step, when they were the tracker's
    # cached report-only ones (see Engine._evaluate)
    stepped: Sequence[object] | None = None
    # Until quiet_until, while the ladder's revision is quiet_revision and the tracker's
    # findings are those of idle_mark: an evaluation would do nothing (Engine._evaluate).
    quiet_until: float = -math.inf
    quiet_revision: int = -1
    idle_mark: int = -1

    @property
    def allocation(self) -> Allocation:
        return self.tracker.allocation

    @property
    def job_id(self) -> str:
        return self.key[0]
