"""Live detection and enforcement in the collector: the same rules and ladder as replay.

Stored reports are queued by the ingest path (event loop) and drained by the evaluation,
which runs in a worker thread every ``evaluate_interval`` because actions block (Slurm
commands, Dask calls). Per job it keeps an :class:`AllocationTracker`; a tracker is rebuilt
from the store when the job's GPU set or start time changes, and after a collector restart
(so the idle streak survives it). Right before acting, the newest stored data is drained
into the tracker and the allocation must still be idle. Every ladder event is appended to
the audit log (SQLite table and JSON lines) and published on the watch stream.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.collector.audit import AuditLog, AuditRecord, record_from_event
from gpuwarden.collector.ladder import ActionExecutor, Ladder
from gpuwarden.collector.policy import Policy, PolicySet
from gpuwarden.collector.rules import Allocation, AllocationTracker, GpuRef, window_from_record
from gpuwarden.collector.server import Collector
from gpuwarden.collector.store import Store, connect
from gpuwarden.common.types import JobInfo, NodeReport, WindowRecord

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    allocation: Allocation
    tracker: AllocationTracker
    policy: Policy
    last_seen: float


def _same_identity(a: JobInfo, b: JobInfo) -> bool:
    return a.start_time == b.start_time and a.partition == b.partition


class Enforcer:
    def __init__(
        self,
        *,
        store: Store,
        policies: PolicySet,
        audit: AuditLog,
        executor: ActionExecutor | None,
        actor: str = "gpuwarden-collector",
        publish: Callable[[AuditRecord], None] | None = None,
        job_gone_after_s: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policies = policies
        self.audit = audit
        self.ladder = Ladder(executor)
        self.actor = actor
        self.publish = publish
        self.job_gone_after_s = job_gone_after_s
        self.clock = clock
        self.evaluations = 0
        self._pending: collections.deque[NodeReport] = collections.deque()
        self._jobs: dict[str, _Job] = {}
        self.lock = threading.Lock()  # one evaluation at a time

    # -- called from the ingest path (event loop thread) --------------------------------
    def on_stored(self, reports: Sequence[NodeReport]) -> None:
        self._pending.extend(reports)  # deque appends are thread-safe

    # -- evaluation (worker thread) -----------------------------------------------------
    def _drain(self, now: float) -> None:
        rebuild: dict[str, JobInfo] = {}
        fresh: list[WindowRecord] = []
        while self._pending:
            r = self._pending.popleft()
            for g in r.gpus:
                if g.job is None:
                    continue
                rec = WindowRecord(r.node, r.window_start, r.window_end, g)
                job = self._jobs.get(g.job.job_id)
                if job is None or rebuild.get(g.job.job_id) is not None:
                    rebuild[g.job.job_id] = g.job
                    continue
                if (
                    not _same_identity(job.allocation.job, g.job)
                    or job.tracker.position(r.node, g.uuid) is None
                ):
                    rebuild[g.job.job_id] = g.job
                    continue
                if job.allocation.job != g.job:  # newer facts (e.g. Slurm came back)
                    job.allocation = dataclasses.replace(job.allocation, job=g.job)
                job.last_seen = max(job.last_seen, r.window_end)
                fresh.append(rec)
        for rec in fresh:
            assert rec.gpu.job is not None
            job = self._jobs.get(rec.gpu.job.job_id)
            if job is not None and rec.gpu.job.job_id not in rebuild:
                job.tracker.add(window_from_record(rec))
        for job_id, info in rebuild.items():
            self._rebuild(job_id, info, now)

    def _rebuild(self, job_id: str, info: JobInfo, now: float) -> None:
        """(Re)build a job's tracker from its stored windows: they are the truth."""
        policy = self.policies.for_job(info)
        horizon = max(policy.idle_window + policy.grace_period, policy.underuse_window)
        since = now - horizon - policy.max_gap
        records, truncated = self.store.history(job_id=job_id, since=since, limit=200_000)
        if truncated:
            log.warning("job %s: history truncated while rebuilding its tracker", job_id)
        gpus: dict[tuple[str, str], GpuRef] = {}
        for rec in records:
            gpus.setdefault((rec.node, rec.gpu.uuid), GpuRef(rec.node, rec.gpu.uuid, rec.gpu.index))
        if not gpus:
            return
        allocation = Allocation(job=info, gpus=tuple(gpus.values()))
        tracker = AllocationTracker(allocation, policy)
        for rec in records:
            tracker.add(window_from_record(rec))
        old = self._jobs.get(job_id)
        self._jobs[job_id] = _Job(
            allocation=allocation,
            tracker=tracker,
            policy=policy,
            last_seen=max(records[-1].window_end, old.last_seen if old else 0.0),
        )

    def evaluate(self, now: float | None = None) -> list[AuditRecord]:
        """Drain new windows, run the rules and the ladder for every job; return the audit
        records written."""
        with self.lock:
            now = self.clock() if now is None else now
            self._drain(now)
            out: list[AuditRecord] = []
            for job_id, job in list(self._jobs.items()):
                if now - job.last_seen > self.job_gone_after_s:
                    del self._jobs[job_id]
                    self.ladder.forget(job_id)
                    continue
                findings = job.tracker.evaluate(now)

                def still_idle(_finding: object, job: _Job = job) -> bool:
                    self._drain(self.clock())  # the newest stored data, right before acting
                    current = self._jobs.get(job.allocation.job.job_id)
                    return current is not None and current.tracker.still_idle(self.clock())

                events = self.ladder.step(now, job.allocation, findings, job.policy, still_idle)
                for event in events:
                    record = record_from_event(event, job.policy, actor=self.actor)
                    self.audit.append(record)
                    out.append(record)
                    log.info(
                        "job %s: %s %s (%s) %s",
                        record.job_id,
                        record.kind,
                        record.action,
                        record.outcome,
                        record.detail,
                    )
                    if self.publish is not None:
                        self.publish(record)
            self.evaluations += 1
            return out

    def jobs(self) -> list[str]:
        return sorted(self._jobs)


class AuditQuery:
    """Read side of the audit table for the query API (its own connection and lock)."""

    def __init__(self, db_path: Path) -> None:
        self._log = AuditLog(conn=connect(db_path))
        self._lock = threading.Lock()

    def query(self, job_id: str, since: float, limit: int) -> list[AuditRecord]:
        with self._lock:
            return self._log.query(job_id=job_id or None, since=since or None, limit=limit)


def attach_enforcement(
    collector: Collector,
    *,
    policies: PolicySet,
    executor: ActionExecutor | None,
    audit_jsonl: Path | None,
    evaluate_interval_s: float,
    actor: str = "gpuwarden-collector",
    job_gone_after_s: float = 900.0,
) -> Enforcer:
    """Run detection (and, where policy says so, enforcement) inside ``collector``.
    Call after ``collector.start()``."""
    loop = asyncio.get_running_loop()
    audit = AuditLog(conn=connect(collector.store.path), jsonl=audit_jsonl)
    collector.audit = AuditQuery(collector.store.path)

    def publish(record: AuditRecord) -> None:
        loop.call_soon_threadsafe(collector.state.publish, record)

    enforcer = Enforcer(
        store=collector.store,
        policies=policies,
        audit=audit,
        executor=executor,
        actor=actor,
        publish=publish,
        job_gone_after_s=job_gone_after_s,
    )
    collector.add_stored_listener(enforcer.on_stored)

    async def evaluate_forever() -> None:
        try:
            while True:
                await asyncio.sleep(evaluate_interval_s)
                try:
                    await asyncio.to_thread(enforcer.evaluate)
                except Exception:
                    log.exception("evaluation failed; trying again in %.0f s", evaluate_interval_s)
        finally:
            # An evaluation may still be running in its thread (cancelled here, not there):
            # close the audit log only when it has finished, so no record is cut off.
            def close() -> None:
                with enforcer.lock:
                    audit.close()

            await asyncio.to_thread(close)

    collector.add_background(evaluate_forever, "enforce")
    return enforcer
