"""The store's reads of raw data, on its reader connection (the caller holds that
connection's lock): report counts, each node's last sequence number, the jobs of a period
and raw windows for history."""

from __future__ import annotations

import sqlite3

from gpuwarden.collector.layout_read import RawQuery, Reader, read_reports
from gpuwarden.common.types import WindowRecord


def count_reports(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM reports").fetchone()[0])


def last_seqs(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT node, max(seq) FROM reports GROUP BY node").fetchall()
    return {str(n): int(s) for n, s in rows}


def job_ids(conn: sqlite3.Connection, since: float) -> list[str]:
    """The jobs with a stored window ending at or after ``since``."""
    rows = conn.execute(
        "SELECT DISTINCT j.job_id FROM jobs j WHERE EXISTS (SELECT 1 FROM report_jobs"
        " l JOIN reports r ON r.id = l.report WHERE l.job = j.id AND r.window_end >= ?)",
        (since,),
    ).fetchall()
    return sorted(str(r[0]) for r in rows)


def job_user(conn: sqlite3.Connection, reader: Reader, job_id: str) -> str | None:
    """The user the newest stored window of ``job_id`` names (None: no such window)."""
    row = conn.execute(
        "SELECT j.id FROM jobs j JOIN reports r ON r.id = (SELECT max(report)"
        " FROM report_jobs WHERE job = j.id) WHERE j.job_id = ?"
        " ORDER BY r.window_end DESC LIMIT 1",
        (job_id,),
    ).fetchone()
    job = None if row is None else reader.job_facts(int(row[0]))
    return job.user if job is not None else None


def raw_history(
    conn: sqlite3.Connection, reader: Reader, q: RawQuery, limit: int
) -> tuple[list[WindowRecord], bool]:
    """Raw windows matching ``q``, oldest first; True when cut at ``limit``."""
    out: list[WindowRecord] = []
    for _, n, ws, we, _, windows in read_reports(reader, conn, q):
        out += [WindowRecord(n, ws, we, g) for g, _ in windows]
        if len(out) > limit:
            return out[:limit], True
    return out, False
