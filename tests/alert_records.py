"""Audit records of researcher alerts, made the way the collector makes them: ladder events
of an idle finding turned into records by ``record_from_event``."""

from __future__ import annotations

from gpuwarden.collector.audit import record_from_event
from gpuwarden.collector.ladder import Ladder
from gpuwarden.collector.policy import Policy
from gpuwarden.collector.rules import Allocation, Finding, FindingKind, GpuEvidence, GpuRef
from gpuwarden.common.types import AuditRecord, JobInfo

T0 = 1_700_000_000.0
GIB = 2**30


def idle_warnings(
    job_id: str = "4242",
    user: str = "alice",
    account: str = "physics",
    *,
    times: tuple[float, ...] = (2400.0,),
    policy: Policy | None = None,
) -> list[AuditRecord]:
    """The warnings an idle two-GPU job gets at ``T0 + t`` for each t of ``times``."""
    policy = policy or Policy(enforce=True)
    gpus = (GpuRef("gpu01", f"GPU-{job_id}-0", 0), GpuRef("gpu01", f"GPU-{job_id}-1", 1))
    since = T0 + 600
    evidence = tuple(
        GpuEvidence(
            node=g.node,
            uuid=g.uuid,
            index=g.index,
            since_ts=since,
            last_end_ts=T0 + 2400,
            covered_s=1920.0,
            windows=384,
            util_max_pct=3.0 if g.index == 0 else 0.0,
            util_mean_pct=0.4 if g.index == 0 else 0.0,
            mem_used_max_bytes=(12 if g.index == 0 else 0) * GIB,
            mem_total_bytes=80 * GIB,
        )
        for g in gpus
    )
    job = JobInfo(
        job_id=job_id,
        user=user,
        account=account,
        partition="gpu",
        start_time=int(T0),
        requeue=True,
    )
    finding = Finding(FindingKind.IDLE, job_id, gpus, since, "idle for 32m", evidence=evidence)
    ladder = Ladder()
    out: list[AuditRecord] = []
    for t in times:
        for e in ladder.step(T0 + t, Allocation(job, gpus), [finding], policy):
            out.append(record_from_event(e, policy, actor="collector@test"))
    return out
