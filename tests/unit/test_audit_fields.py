"""Every audit record names the job's user, account, partition and nodes, end to end:
made from a ladder event, stored in SQLite (also in a table made before these columns),
carried over protobuf; and it says what the ladder will do next."""

from __future__ import annotations

import sqlite3

from gpuwarden.collector.audit import AuditLog, record_from_event
from gpuwarden.collector.ladder import Ladder
from gpuwarden.collector.policy import Policy
from gpuwarden.collector.rules import Allocation, Finding, FindingKind, GpuRef
from gpuwarden.common.convert_query import audit_record_from_pb, audit_record_to_pb
from gpuwarden.common.types import AuditRecord, JobInfo

T0 = 1_700_000_000.0
GPUS = (GpuRef("gpu02", "GPU-b", 1), GpuRef("gpu01", "GPU-a", 0))
JOB = JobInfo(
    job_id="4242",
    user="alice",
    account="physics",
    partition="gpu",
    start_time=int(T0),
    requeue=True,
)


def warnings_for(policy: Policy) -> list[AuditRecord]:
    ladder = Ladder()
    finding = Finding(FindingKind.IDLE, "4242", GPUS, T0 + 600, "idle for 30m")
    out: list[AuditRecord] = []
    for t in (2400, 3300):
        for e in ladder.step(T0 + t, Allocation(JOB, GPUS), [finding], policy):
            out.append(record_from_event(e, policy))
    return out


def test_records_from_ladder_events_name_user_account_partition_and_nodes() -> None:
    first, second = warnings_for(Policy(enforce=True))
    assert (first.user, first.account, first.partition) == ("alice", "physics", "gpu")
    assert first.nodes == ("gpu01", "gpu02")
    # what happens next and when: another warning, then (requeue-able batch job) a requeue
    assert first.evidence["next"] == {
        "action": "warn",
        "at_ts": T0 + 2400 + 900,
        "reason": "another warning",
    }
    assert second.evidence["next"]["action"] == "requeue"
    assert second.evidence["next"]["at_ts"] == T0 + 3300 + 900


def test_in_dry_run_the_next_step_is_nothing() -> None:
    _, second = warnings_for(Policy(enforce=False))
    assert second.evidence["next"] == {
        "action": "none",
        "at_ts": None,
        "reason": "enforcement is off",
    }


def test_fields_survive_sqlite_and_protobuf() -> None:
    record = warnings_for(Policy())[0]
    log = AuditLog(sqlite3.connect(":memory:"))
    log.append(record)
    (stored,) = log.query(job_id="4242")
    assert stored == record
    assert audit_record_from_pb(audit_record_to_pb(record)) == record


def test_an_audit_table_made_before_the_new_columns_gets_them() -> None:
    conn = sqlite3.connect(":memory:")
    conn.executescript(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, ts REAL NOT NULL, job_id TEXT NOT NULL,"
        " kind TEXT NOT NULL, action TEXT NOT NULL, outcome TEXT NOT NULL,"
        " dry_run INTEGER NOT NULL, gpus TEXT NOT NULL, detail TEXT NOT NULL,"
        " evidence TEXT NOT NULL, actor TEXT NOT NULL);"
        "INSERT INTO audit (ts, job_id, kind, action, outcome, dry_run, gpus, detail,"
        " evidence, actor) VALUES (1.0, '9', 'idle', 'warn', 'warned', 0, '[\"GPU-x\"]',"
        " 'old', '{}', 'c');"
    )
    log = AuditLog(conn)
    (old,) = log.query(job_id="9")
    assert (old.user, old.account, old.partition, old.nodes) == ("", "", "", ())
    new = warnings_for(Policy())[0]
    log.append(new)
    assert log.query(job_id="4242")[0].user == "alice"
    AuditLog(conn)  # opening it again changes nothing
    assert len(log.query()) == 2
