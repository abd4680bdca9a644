"""The totals /metrics publishes: idle GPU-seconds by user and account from stored windows,
and findings and actions counted from the real audit table."""

from __future__ import annotations

from pathlib import Path

from gpuwarden.collector.accounting import AuditCounts, AuditKey, IdleAccounting
from gpuwarden.collector.audit import AuditLog, AuditRecord
from gpuwarden.collector.store import Store, connect
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport


def test_idle_seconds_count_allocated_inactive_windows_only() -> None:
    acc = IdleAccounting(active_util_pct=5.0)
    alice = JobInfo(job_id="1", user="alice", account="phys")
    late = GpuWindow("G0", 0, util_max=4.9, job=alice, allocated=True)
    bob = JobInfo(job_id="2", user="bob", account="chem")
    acc.on_stored(
        [
            NodeReport(
                "n1",
                1,
                100.0,
                110.0,
                (
                    GpuWindow("G0", 0, util_max=1.0, job=alice, allocated=True),  # idle: 10 s
                    GpuWindow("G1", 1, util_max=50.0, job=bob, allocated=True),  # active
                    GpuWindow("G2", 2, util_max=None, job=bob, allocated=True),  # unknown
                    GpuWindow("G3", 3, util_max=0.0),  # no job
                ),
            ),
            NodeReport("n1", 2, 110.0, 115.0, (late,)),  # 4.9 % < 5 %: idle, 5 s
        ]
    )
    assert acc.idle_gpu_seconds() == {("alice", "phys"): 15.0}


def record(kind: str, action: str, outcome: str, dry_run: bool) -> AuditRecord:
    return AuditRecord(
        ts=1.0, job_id="9", kind=kind, action=action, outcome=outcome, dry_run=dry_run,
        gpus=("G0",), detail="",
    )  # fmt: skip


def test_audit_counts_read_new_rows_only_and_keep_totals(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    counts = AuditCounts(store.path)
    assert counts.counts() == {}  # no audit table yet: nothing, no error
    log = AuditLog(conn=connect(store.path))
    log.append(record("idle", "warn", "warned", False))
    log.append(record("idle", "warn", "warned", False))
    assert counts.counts() == {AuditKey("idle", "warn", "warned", False): 2}
    log.append(record("idle", "requeue", "dry_run", True))
    log.append(record("advice", "none", "none", False))
    assert counts.counts() == {
        AuditKey("idle", "warn", "warned", False): 2,
        AuditKey("idle", "requeue", "dry_run", True): 1,
        AuditKey("advice", "none", "none", False): 1,
    }
    log.close()
    counts.close()
