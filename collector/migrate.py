"""Bringing a store written by an older gpuwarden to the current schema, in place.

Version 1 kept one ``windows`` row per GPU window (with four indexes) and a ``reports`` row
per report key. Version 2 (:mod:`layout`) keeps one row per report. :func:`v1_to_v2`
rewrites every stored window in one transaction: a crash or a full disk on the way leaves
the version-1 store as it was, and the next start tries again. The roll-ups are the same in
both versions and stay as they are. The space the version-1 tables held is free for new
rows afterwards; ``VACUUM`` (with the collector stopped) gives it back to the file system.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator

from gpuwarden.collector import layout
from gpuwarden.common.convert import gpu_from_pb
from gpuwarden.common.types import NodeReport, SlurmStatus
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

log = logging.getLogger(__name__)

_V1_INDEXES = ("windows_node_end", "windows_uuid_end", "windows_job_end", "windows_end")


def statements(script: str) -> Iterator[str]:
    """The statements of ``script`` one by one (``executescript`` would commit)."""
    for part in script.split(";"):
        if part.strip():
            yield part


def _v1_reports(conn: sqlite3.Connection) -> Iterator[tuple[NodeReport, float, list[pb.GpuWindow]]]:
    """Every version-1 report that still has windows, with its windows' stored bytes."""
    rows = conn.execute(
        "SELECT w.node, w.seq, w.window_start, w.window_end, w.data, r.agent_id, r.received,"
        " r.slurm_available FROM windows w"
        " LEFT JOIN reports_v1 r ON r.node = w.node AND r.seq = w.seq ORDER BY w.id"
    )
    key: tuple[str, int] | None = None
    head: tuple[float, float, str | None, float | None, int | None] = (0.0, 0.0, None, None, None)
    blobs: list[bytes] = []

    def report() -> tuple[NodeReport, float, list[pb.GpuWindow]]:
        assert key is not None
        ws, we, agent_id, received, slurm = head
        msgs = [pb.GpuWindow.FromString(b) for b in blobs]
        gpus = tuple(gpu_from_pb(m) for m in msgs)
        r = NodeReport(
            node=key[0],
            seq=key[1],
            window_start=ws,
            window_end=we,
            gpus=gpus,
            slurm=SlurmStatus(available=slurm is None or bool(slurm)),
            agent_id=agent_id or "",
        )
        return r, we if received is None else received, msgs

    for node, seq, ws, we, data, agent_id, received, slurm in rows:
        if (node, seq) != key:
            if key is not None:
                yield report()
            key, head, blobs = (node, seq), (ws, we, agent_id, received, slurm), []
        blobs.append(bytes(data))
    if key is not None:
        yield report()


def v1_to_v2(conn: sqlite3.Connection, writer: layout.Writer, rollup_schema: str) -> int:
    """Rewrite a version-1 store as version 2 (``conn`` outside a transaction); returns
    the windows it holds."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        (total,) = conn.execute("SELECT count(*) FROM windows").fetchone()
        log.warning(
            "store schema 1 -> 2: rewriting %d stored windows once (about 30 s of CPU per"
            " million); agents keep their reports meanwhile",
            total,
        )
        for index in (*_V1_INDEXES, "reports_end"):
            conn.execute(f"DROP INDEX IF EXISTS {index}")
        conn.execute("ALTER TABLE reports RENAME TO reports_v1")
        for sql in statements(layout.SCHEMA + rollup_schema):
            conn.execute(sql)
        windows = 0
        for r, received, msgs in _v1_reports(conn):
            rows = writer.rows(r, received, msgs)
            cur = conn.execute(layout.INSERT_REPORT, rows.report)
            conn.executemany(layout.INSERT_REPORT_JOB, [(j, cur.lastrowid) for j in rows.job_keys])
            windows += len(r.gpus)
        # report keys whose windows were pruned (or that had none) still de-duplicate
        empty = layout.pack([], [])
        for node, seq, agent_id, ws, we, received, slurm in conn.execute(
            "SELECT node, seq, agent_id, window_start, window_end, received, slurm_available"
            " FROM reports_v1"
        ).fetchall():
            conn.execute(
                layout.INSERT_REPORT,
                (node, seq, ws, we, received, slurm, writer.agent_key(agent_id), 0, empty),
            )
        conn.execute("DROP TABLE windows")
        conn.execute("DROP TABLE reports_v1")
        last = conn.execute("SELECT coalesce(max(id), 0) FROM reports").fetchone()[0]
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('rollup_safe', ?)", (str(last),))
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('windows', ?)", (str(windows),))
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        conn.execute("COMMIT")
    except BaseException:
        writer.rollback()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    writer.commit()
    log.warning("store schema 1 -> 2: %d windows rewritten", windows)
    return windows
