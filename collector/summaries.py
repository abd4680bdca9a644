"""Job summaries in the store, and the reads ``jobstats`` and ``report`` are answered from.

When a job run ends the engine says so; :meth:`JobStatsSource.on_run_end` (called off the
evaluation path) computes the run's summary from its stored windows and audit records and
writes it to the ``job_summaries`` table, so ``gpuwarden jobstats`` keeps working after
retention pruned the raw windows. A running job is summarised on the fly from its windows.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from gpuwarden.collector.audit import AuditLog
from gpuwarden.collector.jobstats import summarize, waste_rows
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.store import Store, connect
from gpuwarden.common.jobstats import JobStats, WasteRow, job_stats_from_json
from gpuwarden.common.types import AuditRecord

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


class JobStatsSource:
    """Answers ``GetJobStats`` and ``GetWasteReport``; writes summaries of ended runs.

    ``policies``: the active policy (what counts as active, how long an idle period must
    last to be listed); attach_enforcement sets the collector's own."""

    def __init__(self, store: Store, policies: PolicySet | None = None) -> None:
        self.store = store
        self.policies = policies or PolicySet()
        self.summaries = JobSummaries(store.path)
        self._audit = AuditLog(conn=connect(store.path))
        self._audit_lock = threading.Lock()
        self.written = 0

    def close(self) -> None:
        self.summaries.close()
        with self._audit_lock:
            self._audit.close()

    def _decisions(self, job_id: str) -> list[AuditRecord]:
        with self._audit_lock:
            return self._audit.query(job_id=job_id, limit=MAX_AUDIT_RECORDS)

    def compute(
        self, job_id: str, *, end: float | None = None, since: float = 0.0
    ) -> JobStats | None:
        """The summary of ``job_id`` from its stored windows (``end`` set: it ended then)."""
        records, truncated = self.store.history(
            job_id=job_id, since=since, until=end, limit=MAX_JOB_WINDOWS
        )
        if truncated:
            log.warning("job %s: more than %d windows; summary of the first", job_id, len(records))
        p = self.policies.default
        decisions = [r for r in self._decisions(job_id) if r.ts >= since]
        return summarize(
            job_id,
            records,
            decisions,
            active_util_pct=p.active_util_pct,
            min_idle_s=min(p.idle_window, 300.0),
            max_gap_s=p.max_gap,
            end=end,
            source="windows" if end is None else "summary",
        )

    def on_run_end(self, ended: tuple[str, float]) -> None:
        """A run of a job ended at ``end_ts``: write its summary (an event subscriber)."""
        job_id, end_ts = ended
        prev = self.summaries.latest(job_id)  # an earlier run (requeued): not this one's
        since = prev.end + 1e-6 if prev is not None and prev.end and prev.end < end_ts else 0.0
        stats = self.compute(job_id, end=end_ts, since=since)
        if stats is not None:
            self.summaries.write(stats)
            self.written += 1

    def job_stats(self, job_id: str) -> JobStats | None:
        """From the stored summary when the job has ended, else from its windows."""
        summary = self.summaries.latest(job_id)
        if summary is not None and summary.end is not None:
            newer, _ = self.store.history(job_id=job_id, since=summary.end + 1e-6, limit=1)
            if not newer:
                return summary
            return self.compute(job_id, since=summary.end + 1e-6)  # requeued: the new run
        return self.compute(job_id)

    def waste_report(self, since: float, until: float) -> list[WasteRow]:
        """Ended jobs' summaries plus the jobs running now (from their windows)."""
        jobs = self.summaries.ended_since(since)
        summarised = {s.job_id for s in jobs}
        for job_id in self.store.job_ids(since):
            if job_id not in summarised:
                stats = self.compute(job_id)
                if stats is not None:
                    jobs.append(stats)
        return waste_rows(jobs, since, until)
