"""Job summaries in the store, and the reads ``jobstats`` and ``report`` are answered from.

When a job run ends the engine says so; :meth:`JobStatsSource.on_run_end` (called off the
evaluation path) computes the run's summary from its stored windows and audit records and
writes it to the ``job_summaries`` table, so ``gpuwarden jobstats`` keeps working after
retention pruned the raw windows. A running job is summarised on the fly from its windows.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpuwarden.collector.audit import AuditLog
from gpuwarden.collector.jobstats import JobAccumulator, waste_rows
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.retention import RAW
from gpuwarden.collector.store import Store, connect
from gpuwarden.common.jobstats import JobStats, WasteRow, job_stats_from_json
from gpuwarden.common.types import AuditRecord, NodeReport, WindowRecord

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS job_summaries (
    job_id TEXT NOT NULL,
    start REAL NOT NULL,
    end_ts REAL NOT NULL,
    user TEXT NOT NULL,
    account TEXT NOT NULL,
    partition TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_summaries_end ON job_summaries (end_ts);
"""

MAX_JOB_WINDOWS = 5_000_000  # one job's windows read for a summary (8 GPUs x 7 days at 1 s)
MAX_AUDIT_RECORDS = 1000  # one job's decisions kept in its summary
MAX_LIVE_JOBS = 100_000  # running jobs accumulated in memory
STALE_S = 86_400.0  # a job without a window for this long is no longer accumulated
STALE_SWEEP_S = 60.0  # how often (data time) the accumulators are checked for staleness


class JobSummaries:
    """The ``job_summaries`` table on one connection of its own (thread-safe)."""

    def __init__(self, db_path: Path) -> None:
        self._conn = connect(db_path)
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def write(self, stats: JobStats) -> None:
        """Store (or replace) the summary of one run of a job."""
        data = json.dumps(stats.to_json(), sort_keys=True, default=str)
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO job_summaries VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    stats.job_id,
                    stats.start or 0.0,
                    stats.end if stats.end is not None else stats.last_seen or 0.0,
                    stats.user,
                    stats.account,
                    stats.partition,
                    data,
                ),
            )

    def latest(self, job_id: str) -> JobStats | None:
        """The summary of the newest ended run of ``job_id``."""
        with self._lock:
            row = self._conn.execute(
                "SELECT data FROM job_summaries WHERE job_id = ? ORDER BY start DESC LIMIT 1",
                (job_id,),
            ).fetchone()
        return None if row is None else job_stats_from_json(json.loads(row[0]))

    def ended_since(self, since: float) -> list[JobStats]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT data FROM job_summaries WHERE end_ts >= ?", (since,)
            ).fetchall()
        return [job_stats_from_json(json.loads(r[0])) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@dataclass(slots=True)
class _Live:
    """A running job's accumulator. ``complete``: it has every stored window of the run
    (it began with the run's first window, or was rebuilt from the store); ``read_until``:
    per node, the newest window end the rebuild read (later copies are not added twice)."""

    acc: JobAccumulator
    complete: bool
    read_until: dict[str, float] = field(default_factory=dict)


class JobStatsSource:
    """Answers ``GetJobStats`` and ``GetWasteReport``; writes summaries of ended runs.

    Every stored report is handed over (:meth:`on_stored`, never blocking ingest) and added,
    in :meth:`drain` (a background thread), to its job's :class:`JobAccumulator`, so a
    running job's summary is ready whatever its length. A job that was running before the
    collector started is rebuilt from its stored windows once, on its first request.
    ``policies``: the active policy (what counts as active, how long an idle period must
    last to be listed); attach_enforcement sets the collector's own."""

    def __init__(self, store: Store, policies: PolicySet | None = None) -> None:
        self.store = store
        self.policies = policies or PolicySet()
        self.summaries = JobSummaries(store.path)
        self._audit = AuditLog(conn=connect(store.path))
        self._audit_lock = threading.Lock()
        self._inbox: collections.deque[NodeReport] = collections.deque()
        self._live: dict[tuple[str, int], _Live] = {}
        # job id -> the starts of its runs in _live: a run's end finds its entry at once
        # (a scan of every running job per run end fell behind thousands of ends a minute)
        self._starts: dict[str, set[int]] = {}
        self._next_sweep = 0.0
        self._lock = threading.Lock()
        self._newest = 0.0
        self.written = 0

    def close(self) -> None:
        self.summaries.close()
        with self._audit_lock:
            self._audit.close()

    # -- live accumulation ------------------------------------------------------------
    def on_stored(self, reports: Sequence[NodeReport]) -> None:
        """Stored reports (ingest's listener, event loop): queued, nothing more."""
        self._inbox.extend(reports)

    def _accumulator(self, job_id: str) -> JobAccumulator:
        p = self.policies.default
        return JobAccumulator(
            job_id,
            active_util_pct=p.active_util_pct,
            min_idle_s=min(p.idle_window, 300.0),
            max_gap_s=p.max_gap,
        )

    def drain(self) -> None:
        """Add the queued reports to their jobs' accumulators; forget jobs silent a day."""
        with self._lock:
            self._drain()

    def _drain(self) -> None:
        inbox = self._inbox
        live = self._live
        while inbox:
            r = inbox.popleft()
            self._newest = max(self._newest, r.window_end)
            for g in r.gpus:
                if g.job is None:
                    continue
                key = (g.job.job_id, g.job.start_time)
                entry = live.get(key)
                if entry is None:
                    if len(live) >= MAX_LIVE_JOBS:
                        continue  # bounded: such a job is computed from the store instead
                    # Raw windows only: picking a resolution reads the roll-ups' span
                    # (~3 ms a job; 16,000 jobs after a restart held the GIL for a minute).
                    earlier, _ = self.store.history(
                        job_id=key[0], until=r.window_start - 1e-6, limit=1, resolution=RAW
                    )
                    entry = self._put(key, _Live(self._accumulator(key[0]), not earlier))
                elif r.window_end <= entry.read_until.get(r.node, -math.inf):
                    continue
                entry.acc.add(WindowRecord(r.node, r.window_start, r.window_end, g))
        if self._newest >= self._next_sweep:
            self._next_sweep = self._newest + STALE_SWEEP_S
            old = self._newest - STALE_S
            for key in [k for k, e in live.items() if (e.acc.last or 0.0) < old]:
                self._pop(key)

    def _put(self, key: tuple[str, int], entry: _Live) -> _Live:
        self._live[key] = entry
        self._starts.setdefault(key[0], set()).add(key[1])
        return entry

    def _pop(self, key: tuple[str, int]) -> _Live | None:
        entry = self._live.pop(key, None)
        starts = self._starts.get(key[0])
        if starts is not None:
            starts.discard(key[1])
            if not starts:
                del self._starts[key[0]]
        return entry

    def _find_live(self, job_id: str, start: int | None = None) -> tuple[str, int] | None:
        starts = self._starts.get(job_id, ())
        keys = [(job_id, s) for s in starts if start in (None, 0) or s == start]
        return max(keys, key=lambda k: self._live[k].acc.last or 0.0) if keys else None

    def _rebuild(self, key: tuple[str, int], since: float) -> _Live:
        """Read the run's stored windows into a fresh accumulator (lock held)."""
        acc = self._accumulator(key[0])
        records, _ = self.store.history(job_id=key[0], since=since, limit=MAX_JOB_WINDOWS)
        read_until: dict[str, float] = {}
        for rec in records:
            acc.add(rec)
            if rec.window_end > read_until.get(rec.node, -math.inf):
                read_until[rec.node] = rec.window_end
        return self._put(key, _Live(acc, True, read_until))

    # -- reads and summaries ----------------------------------------------------------
    def _decisions(self, job_id: str, since: float = 0.0) -> list[AuditRecord]:
        with self._audit_lock:
            records = self._audit.query(job_id=job_id, limit=MAX_AUDIT_RECORDS)
        return sorted((r for r in records if r.ts >= since), key=lambda r: r.ts)

    def compute(
        self, job_id: str, *, end: float | None = None, since: float = 0.0
    ) -> JobStats | None:
        """The summary of ``job_id`` from its stored windows (``end`` set: it ended then)."""
        records, truncated = self.store.history(
            job_id=job_id, since=since, until=end, limit=MAX_JOB_WINDOWS
        )
        if truncated:
            log.warning("job %s: more than %d windows; summary of the first", job_id, len(records))
        acc = self._accumulator(job_id)
        for rec in records:
            acc.add(rec)
        source = "windows" if end is None else "summary"
        return acc.stats(self._decisions(job_id, since), end=end, source=source)

    def on_run_end(self, ended: tuple[str, int, float]) -> None:
        """A run of a job ended at ``end_ts``: write its summary (an event subscriber)."""
        job_id, start, end_ts = ended
        prev = self.summaries.latest(job_id)  # an earlier run (requeued): not this one's
        since = prev.end + 1e-6 if prev is not None and prev.end and prev.end < end_ts else 0.0
        with self._lock:
            self._drain()
            key = self._find_live(job_id, start)
            entry = self._pop(key) if key is not None else None
        if entry is not None and entry.complete:
            stats = entry.acc.stats(self._decisions(job_id, since), end=end_ts, source="summary")
        else:
            stats = self.compute(job_id, end=end_ts, since=since)
        if stats is not None:
            self.summaries.write(stats)
            self.written += 1

    def job_stats(self, job_id: str) -> JobStats | None:
        """A running job from its accumulator, an ended one from its stored summary, else
        (windows stored before this collector started) from the stored windows."""
        summary = self.summaries.latest(job_id)
        ended = summary.end if summary is not None and summary.end is not None else None
        with self._lock:
            self._drain()
            key = self._find_live(job_id)
            entry = None if key is None else self._live[key]
            if entry is not None and ended is not None and (entry.acc.last or 0.0) <= ended:
                entry = None  # what is left of the ended run
            if entry is not None and not entry.complete:
                entry = self._rebuild(key, 0.0 if ended is None else ended + 1e-6)  # type: ignore[arg-type]
            stats = None if entry is None else entry.acc.stats()
        if stats is None and summary is None:
            with self._lock:  # running since before this collector started: rebuild once
                stats = self._adopt(job_id)
        if stats is not None:
            since = 0.0 if ended is None else ended
            return dataclasses.replace(stats, decisions=tuple(self._decisions(job_id, since)))
        return summary

    def _adopt(self, job_id: str) -> JobStats | None:
        """Rebuild ``job_id`` from the store and keep accumulating it (lock held)."""
        if len(self._live) >= MAX_LIVE_JOBS:
            return self.compute(job_id)
        entry = self._rebuild((job_id, 0), 0.0)
        job = entry.acc.job
        if job is None:
            self._pop((job_id, 0))
            return None
        if job.start_time:
            self._put((job_id, job.start_time), entry)
            self._pop((job_id, 0))
        return entry.acc.stats()

    def running(self) -> list[JobStats]:
        """The summaries so far of the jobs running now."""
        with self._lock:
            self._drain()
            for key, e in list(self._live.items()):
                if not e.complete:
                    self._rebuild(key, 0.0)
            out = [e.acc.stats() for e in self._live.values()]
        return [s for s in out if s is not None]

    def waste_report(self, since: float, until: float) -> list[WasteRow]:
        """Ended jobs' summaries plus the jobs running now."""
        jobs = self.summaries.ended_since(since)
        seen = {(s.job_id, s.start) for s in jobs}
        jobs += [s for s in self.running() if (s.job_id, s.start) not in seen]
        return waste_rows(jobs, since, until)
