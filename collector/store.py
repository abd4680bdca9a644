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

Beside this class: :mod:`store_conn` (connections, WAL checkpoint, store-wide faults),
:mod:`store_open` (schema version, ``meta`` figures, roll-up recovery), :mod:`store_queries`
(raw reads) and :mod:`prune_raw` (retention's deletes of raw windows).
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

from gpuwarden.collector import layout, prune_raw, rollup, store_open, store_queries
from gpuwarden.collector.layout_read import RawQuery, Reader
from gpuwarden.collector.retention import RAW, Retention
from gpuwarden.collector.rollup_pending import Pending
from gpuwarden.collector.store_conn import (
    StoreError,
    StoreUnavailable,
    checkpoint,
    connect,
    unavailable,
)
from gpuwarden.collector.store_open import PRUNED_KEY, SCHEMA_VERSION
from gpuwarden.common.types import NodeReport, WindowRecord
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

__all__ = [
    "FLUSH_ROWS",
    "SCHEMA_VERSION",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "connect",
    "unavailable",
]

log = logging.getLogger(__name__)

FLUSH_ROWS = 500  # roll-up rows added to one ingest transaction (~5 ms of its time)


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
            store_open.open_schema(self._w, self._rows, path)
            self._r = connect(path)
            self._reader = Reader(self._r)
            # Kept as a counter: counting walks the whole table, and snapshots ask often.
            self._windows = store_open.count_windows(self._w)
            self._pruned_before = store_open.pruned_before(self._w)
            if self.retention.rollups:
                store_open.recover_rollups(self._w, self._reader, self._pending)
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

    def checkpoint(self) -> int:
        """:func:`store_conn.checkpoint`: the ``-wal`` file's size after. For the
        housekeeping loop, off the event loop."""
        return checkpoint(self.path)

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
            b = prune_raw.select(self._w, older_than, batch)
            self._flush_rollups(sorted({n for n, rid in b.reports if self._pending.holds(n, rid)}))
            with self._pruning(RAW, older_than):
                orphans = prune_raw.delete(self._w, b)
                if b.windows:
                    self._w.execute(
                        "UPDATE meta SET value = ? WHERE key = 'windows'",
                        (str(self._windows - b.windows),),
                    )
            self._windows -= b.windows
            self._rows.forget_jobs(orphans)
        return b.windows, len(b.ids)

    @contextlib.contextmanager
    def _pruning(self, res: int, before: float) -> Iterator[None]:
        """One retention transaction (the caller holds the write lock); on success the
        store remembers that ``res`` holds nothing older than ``before``."""
        with self._transaction():
            yield
            if before > self._pruned_before[res]:
                self._w.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)", (PRUNED_KEY[res], repr(before))
                )
        self._pruned_before[res] = max(self._pruned_before[res], before)

    # -- reads -------------------------------------------------------------------------
    def count_windows(self) -> int:
        return self._windows

    def count_reports(self) -> int:
        with self._rlock:
            return store_queries.count_reports(self._r)

    def last_seqs(self) -> dict[str, int]:
        with self._rlock:
            return store_queries.last_seqs(self._r)

    def job_ids(self, since: float) -> list[str]:
        """The jobs with a stored window ending at or after ``since``."""
        with self._rlock:
            return store_queries.job_ids(self._r, since)

    def job_user(self, job_id: str) -> str | None:
        """The user the newest stored window of ``job_id`` names (None: no such window)."""
        with self._rlock:
            return store_queries.job_user(self._r, self._reader, job_id)

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
        q = RawQuery(node, uuid, job_id, since, until)
        with self._rlock:
            return store_queries.raw_history(self._r, self._reader, q, limit)

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
