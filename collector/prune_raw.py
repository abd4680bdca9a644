"""Retention of raw windows, one batch at a time: which reports a batch deletes, and the
deletes themselves (report rows, their job links, and job facts no report names any more).
:class:`~gpuwarden.collector.store.Store` runs them under its write lock, in a short
transaction of their own, after writing the roll-up sums still pending for them."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from gpuwarden.collector.layout import job_keys_of


@dataclass(slots=True)
class RawBatch:
    """The reports one retention step deletes."""

    ids: list[tuple[int]] = field(default_factory=list)
    links: list[tuple[int, int]] = field(default_factory=list)  # (job key, report id)
    reports: list[tuple[str, int]] = field(default_factory=list)  # (node, report id)
    windows: int = 0


def select(conn: sqlite3.Connection, older_than: float, batch: int) -> RawBatch:
    """Reports that ended before ``older_than``, until about ``batch`` windows (at least
    one report, however many windows it holds)."""
    rows = conn.execute(
        "SELECT id, node, gpus, data FROM reports WHERE window_end < ? LIMIT ?",
        (older_than, batch),
    ).fetchall()
    out = RawBatch()
    for rid, node, n, data in rows:
        if out.ids and out.windows + n > batch:
            break
        out.ids.append((rid,))
        out.links += [(j, rid) for j in job_keys_of(data)]
        out.reports.append((str(node), int(rid)))
        out.windows += n
    return out


def delete(conn: sqlite3.Connection, b: RawBatch) -> list[int]:
    """Delete ``b`` (in the caller's transaction); returns the job keys whose facts were
    deleted with it because no stored report names them any more."""
    conn.executemany("DELETE FROM report_jobs WHERE job = ? AND report = ?", b.links)
    conn.executemany("DELETE FROM reports WHERE id = ?", b.ids)
    orphans: list[tuple[int]] = []
    for job in sorted({j for j, _ in b.links}):
        if not conn.execute("SELECT 1 FROM report_jobs WHERE job = ? LIMIT 1", (job,)).fetchone():
            orphans.append((job,))
    conn.executemany("DELETE FROM jobs WHERE id = ?", orphans)
    return [j for (j,) in orphans]
