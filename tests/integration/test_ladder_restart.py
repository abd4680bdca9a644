"""The action ladder survives a collector restart: a job warned once before it gets its
second warning after, then the action; never "warning 1" again. Real collector, real SQLite,
stopped and started again on the same database."""

from __future__ import annotations

import time
from pathlib import Path

from gpuwarden.collector.audit import AuditRecord
from gpuwarden.collector.enforce import Enforcer, attach_enforcement
from gpuwarden.collector.policy import Policy, PolicySet
from gpuwarden.collector.server import Collector
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, SlurmStatus

POLICY = Policy(
    idle_window=120.0,
    grace_period=0.0,
    warnings=2,
    warn_interval=60.0,
    window=10.0,
    max_gap=30.0,
)
NOW = time.time()
JOB = JobInfo(job_id="L", start_time=int(NOW) - 600, batch=True, requeue=True)


def report(seq: int, end: float) -> NodeReport:
    gpu = GpuWindow(uuid="GPU-l", index=0, util_max=0.0, job=JOB, allocated=True)
    return NodeReport("n1", seq, end - 10.0, end, (gpu,), SlurmStatus(True))


async def started(db: Path) -> tuple[Collector, Enforcer]:
    collector = Collector(db_path=db)
    await collector.start()
    enforcer = attach_enforcement(
        collector,
        policies=PolicySet(default=POLICY),
        executor=None,
        audit_jsonl=None,
        evaluate_interval_s=3600.0,
    )
    return collector, enforcer


def said(records: list[AuditRecord]) -> list[tuple[str, str, str]]:
    return [(r.action, r.outcome, r.detail.split(":")[0]) for r in records]


async def test_a_job_warned_before_a_restart_gets_warning_2_after_it(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    collector, enforcer = await started(db)
    try:
        for k in range(13):  # 130 s idle: just past idle_window
            await collector.ingestor.submit(report(k + 1, NOW - 120 + 10 * k))
        first = enforcer.evaluate(NOW + POLICY.window)
    finally:
        await collector.stop()
    assert said(first) == [("warn", "warned", "warning 1 of 2")]

    collector, enforcer = await started(db)  # the restart
    try:
        for k in range(7):  # 70 s more: one warn_interval after warning 1
            await collector.ingestor.submit(report(14 + k, NOW + 10 * (k + 1)))
        second = enforcer.evaluate(NOW + 70 + POLICY.window)
        assert said(second) == [("warn", "warned", "warning 2 of 2")]
    finally:
        await collector.stop()

    collector, enforcer = await started(db)  # and again: then the (dry-run) action, once
    try:
        for k in range(7):
            await collector.ingestor.submit(report(21 + k, NOW + 70 + 10 * (k + 1)))
        third = enforcer.evaluate(NOW + 140 + POLICY.window)
        assert said(third) == [("requeue", "dry_run", "dry run")]
    finally:
        await collector.stop()

    collector, enforcer = await started(db)  # the action is not repeated for this streak
    try:
        for k in range(7):
            await collector.ingestor.submit(report(28 + k, NOW + 140 + 10 * (k + 1)))
        assert enforcer.evaluate(NOW + 210 + POLICY.window) == []
    finally:
        await collector.stop()
