"""The embedded time-series store: SQLite in WAL mode, one row per report (:mod:`layout`).

Writes are grouped: one transaction stores every report that arrived meanwhile, and the
collector acks a report only after that transaction commits (``synchronous=FULL``), so an
ack always means "on disk". Reports are de-duplicated by (node, seq) in the same
transaction.

The roll-ups (:mod:`gpuwarden.collector.rollup`) are added up in memory as reports are
stored and written a few nodes per transaction, about once a minute per node
(:mod:`rollup_pending` says how a crash loses nothing and counts nothing twice).
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from gpuwarden.collector import layout, migrate, rollup
from gpuwarden.collector.retention import RAW, Retention
from gpuwarden.collector.rollup_pending import Pending
from gpuwarden.common.types import NodeReport, WindowRecord
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"

# meta keys: per resolution, the instant before which rows have been deleted
_PRUNED_KEY = {RAW: "pruned_before_raw", 60: "pruned_before_60", 3600: "pruned_before_3600"}
FLUSH_ROWS = 500  # roll-up rows added to one ingest transaction (~5 ms of its time)


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
        self._pending = Pending()
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
            self._rows = layout.Writer(self._w)
            self._open_schema()
            self._r = connect(path)
            self._reader = layout.Reader(self._r)
            # Kept as a counter: counting walks the whole table, and snapshots ask often.
            self._windows = self._count_windows()
            self._pruned_before = {
                res: float(v[0]) if (v := self._meta(key)) is not None else float("-inf")
                for res, key in _PRUNED_KEY.items()
            }
            if self.retention.rollups:
                self._recover_rollups()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()

    def _open_schema(self) -> None:
        self._w.execute(_META)
        row = self._w.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = None if row is None else row[0]
        if version == "1":
            migrate.v1_to_v2(self._w, self._rows, rollup.SCHEMA)
        elif version is not None and version != str(SCHEMA_VERSION):
            raise StoreError(
                f"{self.path}: schema version {version} is not {SCHEMA_VERSION}; "
                "this gpuwarden cannot read it (a newer gpuwarden wrote it: run that one)"
            )
        self._w.executescript(layout.SCHEMA)
        self._w.executescript(rollup.SCHEMA)
        if version is None:
            self._w.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _count_windows(self) -> int:
        v = self._meta("windows")
        if v is not None:
            return int(v[0])
        n = int(self._w.execute("SELECT coalesce(sum(gpus), 0) FROM reports").fetchone()[0])
        self._w.execute("INSERT OR REPLACE INTO meta VALUES ('windows', ?)", (str(n),))
        return n

    def _recover_rollups(self) -> None:
        """Add again the windows of reports whose roll-up sums were not written before the
        collector stopped (see :mod:`rollup_pending`)."""
        v = self._meta("rollup_safe")
        safe = int(v[0]) if v is not None else 0
        marks = dict(self._w.execute("SELECT node, upto FROM rollup_marks").fetchall())
        n = 0
        rows = self._w.execute(
            "SELECT id, node, window_start, window_end, data FROM reports WHERE id > ? ORDER BY id",
            (safe,),
        )
        for rid, node, ws, we, data in rows:
            if rid <= marks.get(node, 0):
                continue
            gpus = [self._reader.gpu(gk, jk, w) for gk, jk, w in layout.unpack(data)]
            self._pending.add(int(rid), str(node), float(ws), float(we), gpus)
            n += 1
        if n:
            log.info("roll-ups: %d stored reports added again after a restart", n)

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
            try:
                self._flush_rollups(self._pending.matching("", "", ""))
            except Exception as exc:  # they are added again from the reports at the next start
                log.warning(
                    "roll-ups not written at close (%s); added again at the next start", exc
                )
            self._r.close()
            self._w.close()

    # -- writes ------------------------------------------------------------------------
    def write_reports(
        self,
        reports: Sequence[NodeReport],
        received: float,
        received_pb: Sequence[Sequence[pb.GpuWindow] | None] | None = None,
    ) -> list[bool]:
        """Store ``reports`` in one transaction. Returns, per report, True if stored now and
        False if it was a duplicate (already stored). Raises on failure: nothing is stored.
        ``received_pb``: per report, its GPU windows' messages as received (see
        :meth:`layout.Writer.rows`)."""
        if received_pb is None:
            received_pb = [None] * len(reports)
        results: list[bool] = []
        stored: list[tuple[int, NodeReport]] = []
        with self._wlock:
            flush = self._pending.due(FLUSH_ROWS) if self.retention.rollups else []
            with self._transaction() as cur:
                for r, windows in zip(reports, received_pb, strict=True):
                    rows = self._rows.rows(r, received, windows)
                    cur.execute(layout.INSERT_REPORT, rows.report)
                    if cur.rowcount == 0:
                        results.append(False)
                        continue
                    rid = cur.lastrowid
                    assert rid is not None
                    if rows.job_keys:
                        cur.executemany(layout.INSERT_REPORT_JOB, [(j, rid) for j in rows.job_keys])
                    stored.append((rid, r))
                    results.append(True)
                added = sum(len(r.gpus) for _, r in stored)
                if added:
                    total = str(self._windows + added)
                    cur.execute("UPDATE meta SET value = ? WHERE key = 'windows'", (total,))
                if flush:
                    self._write_rollups(cur, flush)
            self._pending.drop(flush)
            self._windows += added
            for rid, r in stored:
                if self.retention.rollups:
                    self._pending.add(rid, r.node, r.window_start, r.window_end, r.gpus)
                else:
                    self._pending.note_id(rid)
        return results

    def _write_rollups(self, cur: sqlite3.Cursor, nodes: Sequence[str]) -> None:
        """Add ``nodes``' pending sums to the roll-up rows (in the caller's transaction)."""
        p = self._pending
        cur.executemany(rollup.UPSERT, p.rows(nodes))
        cur.executemany("INSERT OR REPLACE INTO rollup_marks VALUES (?, ?)", p.marks(nodes))
        cur.execute(
            "INSERT OR REPLACE INTO meta VALUES ('rollup_safe', ?)", (str(p.safe_after(nodes)),)
        )

    def _flush_rollups(self, nodes: Sequence[str]) -> None:
        """Write ``nodes``' pending sums in a transaction of their own (write lock held)."""
        if nodes:
            with self._transaction() as cur:
                self._write_rollups(cur, nodes)
            self._pending.drop(nodes)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (the caller holds the write lock). On any error it is
        rolled back, dictionary entries made in it are forgotten, and a store-wide fault
        is raised as :class:`StoreUnavailable`."""
        cur = self._w.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException as exc:
            self._rows.rollback()
            # SQLite has already rolled back after some errors (SQLITE_FULL): a second
            # ROLLBACK would only hide the cause behind "no transaction is active".
            if self._w.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
            fault = unavailable(exc)
            if fault is not None:
                raise fault from exc
            raise
        self._rows.commit()

    def _rollups_readable(self, node: str, uuid: str, job_id: str) -> None:
        """Write the pending sums a roll-up read with these filters would include."""
        with self._wlock:
            self._flush_rollups(self._pending.matching(node, uuid, job_id))

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
        """One retention step: about ``prune_batch`` windows (and their report rows), or
        that many roll-up rows of one resolution, deleted in a short transaction of its
        own. Returns the rows deleted (windows and reports); 0 when nothing is due.
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
        """Reports that ended before ``older_than`` until about ``batch`` windows, with
        their job links and the job facts no report names any more; roll-up sums still
        pending for them are written first."""
        with self._wlock:
            rows = self._w.execute(
                "SELECT id, node, gpus, data FROM reports WHERE window_end < ? LIMIT ?",
                (older_than, batch),
            ).fetchall()
            ids: list[tuple[int]] = []
            links: list[tuple[int, int]] = []
            windows = 0
            nodes: set[str] = set()
            for rid, node, n, data in rows:
                if ids and windows + n > batch:
                    break
                ids.append((rid,))
                links += [(j, rid) for j in layout.job_keys_of(data)]
                windows += n
                if self._pending.holds(node, rid):
                    nodes.add(node)
            self._flush_rollups(sorted(nodes))
            orphans: list[tuple[int]] = []
            with self._pruning(RAW, older_than):
                self._w.executemany("DELETE FROM report_jobs WHERE job = ? AND report = ?", links)
                self._w.executemany("DELETE FROM reports WHERE id = ?", ids)
                for job in sorted({j for j, _ in links}):  # facts no stored report names
                    if not self._w.execute(
                        "SELECT 1 FROM report_jobs WHERE job = ? LIMIT 1", (job,)
                    ).fetchone():
                        orphans.append((job,))
                self._w.executemany("DELETE FROM jobs WHERE id = ?", orphans)
                if windows:
                    self._w.execute(
                        "UPDATE meta SET value = ? WHERE key = 'windows'",
                        (str(self._windows - windows),),
                    )
            self._windows -= windows
            self._rows.forget_jobs(j for (j,) in orphans)
        return windows, len(ids)

    @contextlib.contextmanager
    def _pruning(self, res: int, before: float) -> Iterator[None]:
        """One retention transaction (the caller holds the write lock); on success the
        store remembers that ``res`` holds nothing older than ``before``."""
        with self._transaction():
            yield
            if before > self._pruned_before[res]:
                self._w.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)", (_PRUNED_KEY[res], repr(before))
                )
        self._pruned_before[res] = max(self._pruned_before[res], before)

    # -- reads -------------------------------------------------------------------------
    def count_windows(self) -> int:
        return self._windows

    def count_reports(self) -> int:
        with self._rlock:
            return int(self._r.execute("SELECT count(*) FROM reports").fetchone()[0])

    def last_seqs(self) -> dict[str, int]:
        with self._rlock:
            rows = self._r.execute("SELECT node, max(seq) FROM reports GROUP BY node").fetchall()
        return {str(n): int(s) for n, s in rows}

    def job_ids(self, since: float) -> list[str]:
        """The jobs with a stored window ending at or after ``since``."""
        with self._rlock:
            rows = self._r.execute(
                "SELECT DISTINCT j.job_id FROM jobs j WHERE EXISTS (SELECT 1 FROM report_jobs"
                " l JOIN reports r ON r.id = l.report WHERE l.job = j.id AND r.window_end >= ?)",
                (since,),
            ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def job_user(self, job_id: str) -> str | None:
        """The user the newest stored window of ``job_id`` names (None: no such window)."""
        with self._rlock:
            row = self._r.execute(
                "SELECT j.id FROM jobs j JOIN reports r ON r.id = (SELECT max(report)"
                " FROM report_jobs WHERE job = j.id) WHERE j.job_id = ?"
                " ORDER BY r.window_end DESC LIMIT 1",
                (job_id,),
            ).fetchone()
            job = None if row is None else self._reader.job_facts(int(row[0]))
        return job.user if job is not None else None

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
            self._rollups_readable(node, uuid, job_id)
            with self._rlock:
                return rollup.history(
                    self._r,
                    rollup.RollupQuery(resolution, node, uuid, job_id, since, until, limit),
                )
        out: list[WindowRecord] = []
        q = layout.RawQuery(node, uuid, job_id, since, until)
        with self._rlock:
            for _, n, ws, we, _, windows in layout.read_reports(self._reader, self._r, q):
                out += [WindowRecord(n, ws, we, g) for g, _ in windows]
                if len(out) > limit:
                    return out[:limit], True
        return out, False

    def resolution_for(
        self, node: str, uuid: str, job_id: str, since: float, until: float | None
    ) -> int:
        """The resolution a history query over these filters reads (see :mod:`retention`)."""
        if not self.retention.rollups:
            return RAW
        self._rollups_readable(node, uuid, job_id)
        with self._rlock:
            span = rollup.data_span(self._r, node, uuid, job_id)
        if span is None:
            return RAW
        start = max(since, span[0])
        end = min(until if until is not None else span[1], span[1])
        return self.retention.resolution_for(start, end, self._pruned_before)
