"""The embedded time-series store: SQLite in WAL mode, one row per GPU per report window.

Writes are grouped: one transaction stores every report that arrived meanwhile, and the
collector acks a report only after that transaction commits (``synchronous=FULL``), so an
ack always means "on disk". Reports are de-duplicated by (node, seq) in the same
transaction. Each row keeps the indexed numbers as columns and the whole window (processes,
job, errors) as a serialized ``GpuWindow``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from gpuwarden.common.convert import gpu_from_pb, gpu_to_pb
from gpuwarden.common.types import NodeReport, WindowRecord
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    window_start REAL NOT NULL,
    window_end REAL NOT NULL,
    received REAL NOT NULL,
    slurm_available INTEGER NOT NULL,
    PRIMARY KEY (node, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS windows (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    uuid TEXT NOT NULL,
    gpu_index INTEGER NOT NULL,
    job_id TEXT,
    window_start REAL NOT NULL,
    window_end REAL NOT NULL,
    samples INTEGER NOT NULL,
    util_mean REAL,
    util_max REAL,
    mem_used_max_bytes INTEGER,
    mem_total_bytes INTEGER,
    power_mean_w REAL,
    allocated INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS windows_node_end ON windows (node, window_end);
CREATE INDEX IF NOT EXISTS windows_uuid_end ON windows (uuid, window_end);
CREATE INDEX IF NOT EXISTS windows_job_end ON windows (job_id, window_end) WHERE job_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS windows_end ON windows (window_end);
"""


class StoreError(RuntimeError):
    pass


class StoreUnavailable(StoreError):
    """The store cannot write now (disk full, I/O error, read-only): nobody's report is at
    fault; agents keep theirs in their spools and send them again later."""


_SQLITE_FULL, _SQLITE_IOERR, _SQLITE_READONLY, _SQLITE_CANTOPEN = 13, 10, 8, 14


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The store-wide fault behind ``exc``, or None when it is not one."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.OperationalError) and code is not None:
        primary = code & 0xFF
        if primary == _SQLITE_FULL:
            return StoreUnavailable(f"the disk under the store is full ({exc})")
        if primary in (_SQLITE_IOERR, _SQLITE_READONLY, _SQLITE_CANTOPEN):
            return StoreUnavailable(f"the store cannot write ({exc})")
    if isinstance(exc, OSError):
        return StoreUnavailable(f"the store cannot write ({exc})")
    return None


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
    return conn


class Store:
    """Owns one writer connection and one reader connection (WAL lets them run together)."""

    def __init__(self, path: Path, *, min_free_bytes: int = 0) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            st = os.statvfs(path.parent)
            free = st.f_bavail * st.f_frsize
            if free < min_free_bytes:
                raise StoreUnavailable(
                    f"cannot start on {path.parent}: the disk is full ({free} bytes free, "
                    f"min_free_space is {min_free_bytes}); free some space and start again"
                )
            self._w = connect(path)
            self._w.executescript(_SCHEMA)
            row = self._w.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._w.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: schema version {row[0]} is not {SCHEMA_VERSION}; "
                    "this gpuwarden cannot read it"
                )
            self._r = connect(path)
            # Kept as a counter: count(*) walks the whole table, and snapshots ask often.
            self._windows = int(self._w.execute("SELECT count(*) FROM windows").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()

    @property
    def writer(self) -> sqlite3.Connection:
        """The writer connection, for tables that live beside the windows (audit log)."""
        return self._w

    @property
    def write_lock(self) -> threading.Lock:
        return self._wlock

    def close(self) -> None:
        with self._wlock, self._rlock:
            self._r.close()
            self._w.close()

    # -- writes ------------------------------------------------------------------------
    def write_reports(self, reports: Sequence[NodeReport], received: float) -> list[bool]:
        """Store ``reports`` in one transaction. Returns, per report, True if stored now and
        False if it was a duplicate (already stored). Raises on failure: nothing is stored."""
        results: list[bool] = []
        with self._wlock:
            cur = self._w.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for r in reports:
                    cur.execute(
                        "INSERT OR IGNORE INTO reports VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            r.node,
                            r.seq,
                            r.agent_id,
                            r.window_start,
                            r.window_end,
                            received,
                            int(r.slurm.available),
                        ),
                    )
                    if cur.rowcount == 0:
                        results.append(False)
                        continue
                    cur.executemany(
                        "INSERT INTO windows (node, seq, uuid, gpu_index, job_id, window_start,"
                        " window_end, samples, util_mean, util_max, mem_used_max_bytes,"
                        " mem_total_bytes, power_mean_w, allocated, data)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                r.node,
                                r.seq,
                                g.uuid,
                                g.index,
                                g.job.job_id if g.job else None,
                                r.window_start,
                                r.window_end,
                                g.samples,
                                g.util_mean,
                                g.util_max,
                                g.mem_used_max_bytes,
                                g.mem_total_bytes,
                                g.power_mean_w,
                                int(g.allocated),
                                gpu_to_pb(g).SerializeToString(),
                            )
                            for g in r.gpus
                        ],
                    )
                    results.append(True)
                cur.execute("COMMIT")
            except BaseException as exc:
                # SQLite has already rolled back after some errors (SQLITE_FULL): a second
                # ROLLBACK would only hide the cause behind "no transaction is active".
                if self._w.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        cur.execute("ROLLBACK")
                fault = unavailable(exc)
                if fault is not None:
                    raise fault from exc
                raise
            self._windows += sum(len(r.gpus) for r, ok in zip(reports, results, strict=True) if ok)
        return results

    def prune(self, older_than: float) -> int:
        """Retention: delete windows (and report keys) that ended before ``older_than``."""
        with self._wlock:
            cur = self._w.execute("DELETE FROM windows WHERE window_end < ?", (older_than,))
            deleted = cur.rowcount
            self._w.execute("DELETE FROM reports WHERE window_end < ?", (older_than,))
            self._windows -= deleted
        return deleted

    # -- reads -------------------------------------------------------------------------
    def _query(self, sql: str, params: Iterable[object]) -> list[tuple[object, ...]]:
        with self._rlock:
            return self._r.execute(sql, tuple(params)).fetchall()

    def count_windows(self) -> int:
        return self._windows

    def count_reports(self) -> int:
        return int(str(self._query("SELECT count(*) FROM reports", ())[0][0]))

    def last_seqs(self) -> dict[str, int]:
        rows = self._query("SELECT node, max(seq) FROM reports GROUP BY node", ())
        return {str(n): int(s) for n, s in rows}  # type: ignore[call-overload]

    def job_user(self, job_id: str) -> str | None:
        """The user the newest stored window of ``job_id`` names (None: no such window)."""
        rows = self._query(
            "SELECT data FROM windows WHERE job_id = ? ORDER BY window_end DESC LIMIT 1",
            (job_id,),
        )
        if not rows:
            return None
        gpu = gpu_from_pb(pb.GpuWindow.FromString(rows[0][0]))  # type: ignore[arg-type]
        return gpu.job.user if gpu.job is not None else None

    def history(
        self,
        *,
        node: str = "",
        uuid: str = "",
        job_id: str = "",
        since: float = 0.0,
        until: float | None = None,
        limit: int = 10_000,
    ) -> tuple[list[WindowRecord], bool]:
        """Windows matching every given filter, oldest first; True when cut at ``limit``."""
        where = ["window_end >= ?"]
        params: list[object] = [since]
        if until is not None:
            where.append("window_end <= ?")
            params.append(until)
        for col, value in (("node", node), ("uuid", uuid), ("job_id", job_id)):
            if value:
                where.append(f"{col} = ?")
                params.append(value)
        params.append(limit + 1)
        rows = self._query(
            "SELECT node, window_start, window_end, data FROM windows WHERE "  # noqa: S608 (fixed column names; values are bound)
            + " AND ".join(where)
            + " ORDER BY window_end, id LIMIT ?",
            params,
        )
        truncated = len(rows) > limit
        out = [
            WindowRecord(
                node=str(n),
                window_start=float(ws),  # type: ignore[arg-type]
                window_end=float(we),  # type: ignore[arg-type]
                gpu=gpu_from_pb(pb.GpuWindow.FromString(data)),  # type: ignore[arg-type]
            )
            for n, ws, we, data in rows[:limit]
        ]
        return out, truncated
