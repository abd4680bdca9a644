"""The embedded time-series store: SQLite in WAL mode, one row per GPU per report window.

Writes are grouped: one transaction stores every report that arrived meanwhile, and the
collector acks a report only after that transaction commits (``synchronous=FULL``), so an
ack always means "on disk". Reports are de-duplicated by (node, seq) in the same
transaction. Each row keeps the indexed numbers as columns and the whole window (processes,
job, errors) as a serialized ``GpuWindow``.

The roll-ups (:mod:`gpuwarden.collector.rollup`) are written in the same transaction.
Retention deletes in small batches (:meth:`Store.prune_step`), each its own short
transaction, so ingest never waits behind a long DELETE; a history query reads the
resolution that fits its range (:mod:`gpuwarden.collector.retention`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from gpuwarden.collector import rollup
from gpuwarden.collector.retention import RAW, Retention
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
CREATE INDEX IF NOT EXISTS reports_end ON reports (window_end);
"""

# meta keys: per resolution, the instant before which rows have been deleted
_PRUNED_KEY = {RAW: "pruned_before_raw", 60: "pruned_before_60", 3600: "pruned_before_3600"}


INSERT_REPORT = "INSERT OR IGNORE INTO reports VALUES (?, ?, ?, ?, ?, ?, ?)"
INSERT_WINDOW = (
    "INSERT INTO windows (node, seq, uuid, gpu_index, job_id, window_start, window_end,"
    " samples, util_mean, util_max, mem_used_max_bytes, mem_total_bytes, power_mean_w,"
    " allocated, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def report_row(r: NodeReport, received: float) -> tuple[object, ...]:
    """The ``reports`` row of ``r`` (its (node, seq) key de-duplicates)."""
    return (
        r.node,
        r.seq,
        r.agent_id,
        r.window_start,
        r.window_end,
        received,
        int(r.slurm.available),
    )


def window_rows(r: NodeReport, blobs: Sequence[bytes] | None = None) -> list[tuple[object, ...]]:
    """The ``windows`` rows of ``r``, one per GPU. ``blobs``: each GPU window's serialized
    ``gpuwarden.v1.GpuWindow`` as received (the collector stores those bytes instead of
    encoding the window again); None to encode them here."""
    if blobs is None:
        blobs = [gpu_to_pb(g).SerializeToString() for g in r.gpus]
    elif len(blobs) != len(r.gpus):
        raise ValueError(f"{len(blobs)} serialized windows for {len(r.gpus)} GPUs")
    return [
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
            blob,
        )
        for g, blob in zip(r.gpus, blobs, strict=True)
    ]


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

    def __init__(
        self,
        path: Path,
        *,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.time,
        min_free_bytes: int = 0,
    ) -> None:
        self.path = path
        self.retention = retention or Retention()
        self.clock = clock
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
            self._w.executescript(rollup.SCHEMA)
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
            self._pruned_before = {
                res: float(v[0]) if (v := self._meta(key)) is not None else float("-inf")
                for res, key in _PRUNED_KEY.items()
            }
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()

    def _meta(self, key: str) -> tuple[str] | None:
        row = self._w.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else (str(row[0]),)

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
    def write_reports(
        self,
        reports: Sequence[NodeReport],
        received: float,
        blobs: Sequence[Sequence[bytes] | None] | None = None,
    ) -> list[bool]:
        """Store ``reports`` in one transaction. Returns, per report, True if stored now and
        False if it was a duplicate (already stored). Raises on failure: nothing is stored.
        ``blobs``: per report, its GPU windows as received (see :func:`window_rows`)."""
        if blobs is None:
            blobs = [None] * len(reports)
        results: list[bool] = []
        with self._wlock:
            cur = self._w.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for r, gpu_blobs in zip(reports, blobs, strict=True):
                    cur.execute(INSERT_REPORT, report_row(r, received))
                    if cur.rowcount == 0:
                        results.append(False)
                        continue
                    cur.executemany(INSERT_WINDOW, window_rows(r, gpu_blobs))
                    results.append(True)
                if self.retention.rollups:
                    rollup.add_reports(
                        cur, (r for r, ok in zip(reports, results, strict=True) if ok)
                    )
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
        """Delete raw windows (and report keys) that ended before ``older_than``, batch by
        batch; returns how many windows."""
        deleted = 0
        while True:
            windows, reports = self._prune_raw_step(older_than, self.retention.prune_batch)
            deleted += windows
            if not (windows or reports):
                return deleted

    def prune_step(self, now: float | None = None) -> int:
        """One retention step: at most ``prune_batch`` rows of one resolution deleted in a
        short transaction of its own. Returns the rows deleted; 0 when nothing is due.
        Call it again (off the event loop) until it returns 0."""
        now = self.clock() if now is None else now
        batch = self.retention.prune_batch
        for res, horizon in self.retention.horizons(now).items():
            if res == RAW:
                n = sum(self._prune_raw_step(horizon, batch))
            else:
                with self._wlock, self._pruning(res, horizon):
                    n = rollup.prune_step(self._w, res, horizon, batch)
            if n:
                return n
        return 0

    def _prune_raw_step(self, older_than: float, batch: int) -> tuple[int, int]:
        with self._wlock:
            with self._pruning(RAW, older_than):
                n = self._w.execute(
                    "DELETE FROM windows WHERE id IN"
                    " (SELECT id FROM windows WHERE window_end < ? LIMIT ?)",
                    (older_than, batch),
                ).rowcount
                n_reports = self._w.execute(
                    "DELETE FROM reports WHERE (node, seq) IN"
                    " (SELECT node, seq FROM reports WHERE window_end < ? LIMIT ?)",
                    (older_than, batch),
                ).rowcount
            self._windows -= n
        return n, n_reports

    @contextlib.contextmanager
    def _pruning(self, res: int, before: float) -> Iterator[None]:
        """One retention transaction (the caller holds the write lock); on success the
        store remembers that ``res`` holds nothing older than ``before``."""
        self._w.execute("BEGIN IMMEDIATE")
        try:
            yield
            if before > self._pruned_before[res]:
                self._w.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)", (_PRUNED_KEY[res], repr(before))
                )
            self._w.execute("COMMIT")
        except BaseException as exc:
            if self._w.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                with contextlib.suppress(sqlite3.Error):
                    self._w.execute("ROLLBACK")
            fault = unavailable(exc)
            if fault is not None:
                raise fault from exc
            raise
        self._pruned_before[res] = max(self._pruned_before[res], before)

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

    def job_ids(self, since: float) -> list[str]:
        """The jobs with a stored window ending at or after ``since``."""
        rows = self._query(
            "SELECT DISTINCT job_id FROM windows WHERE window_end >= ? AND job_id IS NOT NULL",
            (since,),
        )
        return sorted(str(r[0]) for r in rows)

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
        resolution: int | None = None,
    ) -> tuple[list[WindowRecord], bool]:
        """Windows matching every given filter, oldest first; True when cut at ``limit``.

        ``resolution``: 0 for raw windows, 60 or 3600 for roll-ups (one record per GPU, job
        and bucket), None to pick the one that fits the range of the matching data
        (:meth:`Retention.resolution_for`)."""
        if resolution is None:
            resolution = self.resolution_for(node, uuid, job_id, since, until)
        if resolution != RAW:
            if resolution not in rollup.RESOLUTIONS:
                raise ValueError(f"resolution {resolution} is not 0, 60 or 3600")
            with self._rlock:
                return rollup.history(
                    self._r,
                    rollup.RollupQuery(resolution, node, uuid, job_id, since, until, limit),
                )
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

    def resolution_for(
        self, node: str, uuid: str, job_id: str, since: float, until: float | None
    ) -> int:
        """The resolution a history query over these filters reads (see :mod:`retention`)."""
        if not self.retention.rollups:
            return RAW
        with self._rlock:
            span = rollup.data_span(self._r, node, uuid, job_id)
        if span is None:
            return RAW
        start = max(since, span[0])
        end = min(until if until is not None else span[1], span[1])
        return self.retention.resolution_for(start, end, self._pruned_before)
