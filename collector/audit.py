"""Audit log: every ladder decision and action with its evidence, in SQLite and/or JSON Lines."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, BinaryIO

from gpuwarden.collector.ladder import Action, LadderEvent, Status, action_chain
from gpuwarden.collector.policy import Policy
from gpuwarden.common.types import AuditRecord as AuditRecord  # re-exported (was defined here)

# the policy values a decision depends on, kept with every record
_POLICY_KEYS = (
    "active_util_pct",
    "idle_window",
    "grace_period",
    "gpu_frac",
    "underuse_window",
    "underuse_pct",
    "max_gap",
    "warnings",
    "warn_interval",
    "enforce",
    "requeue_mode",
    "allow_cancel",
    "enforce_partly_idle",
)


def next_step(event: LadderEvent, policy: Policy) -> dict[str, Any]:
    """What the ladder will do next about this finding and when, if the GPUs stay idle:
    ``{"action": ..., "at_ts": ... or None, "reason": ...}`` (told to the researcher)."""
    d = event.decision
    if event.status is not Status.WARNED:
        return {"action": Action.NONE.value, "at_ts": None, "reason": event.status.value}
    at = d.ts + policy.warn_interval
    if 0 < d.attempt < policy.warnings:
        return {"action": Action.WARN.value, "at_ts": at, "reason": "another warning"}
    if not policy.enforce:
        return {"action": Action.NONE.value, "at_ts": None, "reason": "enforcement is off"}
    chain = action_chain(d.allocation, policy)
    if d.attempt == 0 or not chain:  # nothing (left) the policy allows: more warnings
        return {"action": Action.WARN.value, "at_ts": at, "reason": d.reason or "no action"}
    return {"action": chain[0].value, "at_ts": at, "reason": "policy"}


def record_from_event(event: LadderEvent, policy: Policy, actor: str = "gpuwarden") -> AuditRecord:
    """The audit record of one ladder event: the finding's windows and the policy used."""
    d = event.decision
    f = d.finding
    evidence: dict[str, Any] = {
        "finding": {"kind": f.kind.value, "code": f.code, "since_ts": f.since_ts},
        "windows": [dataclasses.asdict(e) for e in f.evidence],
        "policy": {k: getattr(policy, k) for k in _POLICY_KEYS},
    }
    if d.attempt:
        evidence["attempt"] = d.attempt
    evidence["next"] = next_step(event, policy)
    if d.reason:
        evidence["reason"] = d.reason
    job = d.allocation.job
    nodes = sorted({g.node for g in d.allocation.gpus} | {e.node for e in f.evidence})
    return AuditRecord(
        ts=d.ts,
        job_id=d.job_id,
        kind=f.kind.value,
        action=d.action.value,
        outcome=event.status.value,
        dry_run=event.dry_run,
        gpus=f.uuids,
        detail=event.detail,
        evidence=evidence,
        actor=actor,
        user=job.user,
        account=job.account,
        partition=job.partition,
        nodes=tuple(nodes),
    )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    gpus TEXT NOT NULL,
    detail TEXT NOT NULL,
    evidence TEXT NOT NULL,
    actor TEXT NOT NULL,
    user TEXT NOT NULL DEFAULT '',
    account TEXT NOT NULL DEFAULT '',
    partition TEXT NOT NULL DEFAULT '',
    nodes TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS audit_job_ts ON audit (job_id, ts);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
"""

# columns added after the first release: a table made before them gets them (old rows keep
# the defaults, meaning unknown)
_ADDED_COLUMNS = (
    ("user", "TEXT NOT NULL DEFAULT ''"),
    ("account", "TEXT NOT NULL DEFAULT ''"),
    ("partition", "TEXT NOT NULL DEFAULT ''"),
    ("nodes", "TEXT NOT NULL DEFAULT '[]'"),
)


def _migrate(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
    for name, decl in _ADDED_COLUMNS:
        if name not in have:
            conn.execute(f"ALTER TABLE audit ADD COLUMN {name} {decl}")


class AuditLog:
    """Appends records to a SQLite table (given an open connection) and/or a JSON Lines file.

    Each JSON line is flushed and fsync'ed before :meth:`append` returns; the SQLite row is
    committed. ``query`` reads the SQLite table, newest first.
    """

    def __init__(self, conn: sqlite3.Connection | None = None, jsonl: Path | None = None) -> None:
        if conn is None and jsonl is None:
            raise ValueError("AuditLog needs a SQLite connection, a JSON Lines path, or both")
        self._conn = conn
        self._fh: BinaryIO | None = None
        if conn is not None:
            conn.executescript(_SCHEMA)
            _migrate(conn)
            conn.commit()
        if jsonl is not None:
            jsonl.parent.mkdir(parents=True, exist_ok=True)
            self._fh = jsonl.open("ab")

    def append(self, record: AuditRecord) -> None:
        evidence = json.dumps(dict(record.evidence), sort_keys=True, default=str)
        if self._conn is not None:
            with self._conn:
                self._conn.execute(
                    "INSERT INTO audit (ts, job_id, kind, action, outcome, dry_run, gpus,"
                    " detail, evidence, actor, user, account, partition, nodes)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.ts,
                        record.job_id,
                        record.kind,
                        record.action,
                        record.outcome,
                        int(record.dry_run),
                        json.dumps(list(record.gpus)),
                        record.detail,
                        evidence,
                        record.actor,
                        record.user,
                        record.account,
                        record.partition,
                        json.dumps(list(record.nodes)),
                    ),
                )
        if self._fh is not None:
            line = json.dumps(record.to_json(), sort_keys=True, default=str) + "\n"
            self._fh.write(line.encode())
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def query(
        self, job_id: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        if self._conn is None:
            raise RuntimeError("this audit log has no SQLite table to query")
        where: list[str] = []
        args: list[Any] = []
        if job_id is not None:
            where.append("job_id = ?")
            args.append(job_id)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        sql = (
            "SELECT ts, job_id, kind, action, outcome, dry_run, gpus, detail, evidence, actor,"  # noqa: S608 (fixed clauses, values bound)
            " user, account, partition, nodes FROM audit"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY ts DESC, id DESC LIMIT ?"
        )
        args.append(max(0, limit))
        return [
            AuditRecord(
                ts=row[0],
                job_id=row[1],
                kind=row[2],
                action=row[3],
                outcome=row[4],
                dry_run=bool(row[5]),
                gpus=tuple(json.loads(row[6])),
                detail=row[7],
                evidence=json.loads(row[8]),
                actor=row[9],
                user=row[10],
                account=row[11],
                partition=row[12],
                nodes=tuple(json.loads(row[13])),
            )
            for row in self._conn.execute(sql, args)
        ]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
