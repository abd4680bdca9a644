"""Running totals the collector publishes (``/metrics``): idle GPU-seconds by user and
account, and findings and actions by kind.

- :class:`IdleAccounting` is a stored-report listener: every stored window of a GPU that is
  allocated to a job and was not active (its maximum utilisation below ``active_util_pct``,
  the detection rules' own threshold) adds the window's length to that job's user and
  account. A window with no utilisation reading adds nothing: unknown is not idle.
- :class:`AuditCounts` counts the audit records (the ladder's decisions and actions) by
  kind, action, outcome and dry-run, reading only the rows added since its last look.

Both are totals since the collector started (Prometheus counters: ``rate`` and
``increase`` handle restarts).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.common.types import NodeReport


@dataclass(frozen=True, slots=True)
class AuditKey:
    kind: str  # idle | partly_idle | underused | advice
    action: str  # none | warn | release_dask_worker | requeue | requeuehold | cancel
    outcome: str
    dry_run: bool


class IdleAccounting:
    def __init__(self, active_util_pct: float = 5.0) -> None:
        self.active_util_pct = active_util_pct
        self._lock = threading.Lock()
        self._idle_s: dict[tuple[str, str], float] = {}

    def on_stored(self, reports: Sequence[NodeReport]) -> None:
        with self._lock:
            for r in reports:
                length = max(0.0, r.window_end - r.window_start)
                for g in r.gpus:
                    if g.job is None or not g.allocated or g.util_max is None:
                        continue
                    if g.util_max < self.active_util_pct:
                        key = (g.job.user, g.job.account)
                        self._idle_s[key] = self._idle_s.get(key, 0.0) + length

    def idle_gpu_seconds(self) -> dict[tuple[str, str], float]:
        """(user, account) -> idle GPU-seconds since start."""
        with self._lock:
            return dict(self._idle_s)


class AuditCounts:
    """Counts of the audit table's rows, read incrementally from a read-only connection."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._last_id = 0
        self._counts: dict[AuditKey, int] = {}

    def counts(self) -> Mapping[AuditKey, int]:
        with self._lock:
            try:
                self._read_new()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):  # no enforcement attached: no records
                    raise
            return dict(self._counts)

    def _read_new(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(
                f"file:{self.db_path}?mode=ro", uri=True, check_same_thread=False
            )
            self._conn.execute("PRAGMA busy_timeout = 5000")
        rows = self._conn.execute(
            "SELECT id, kind, action, outcome, dry_run FROM audit WHERE id > ? ORDER BY id",
            (self._last_id,),
        ).fetchall()
        for row_id, kind, action, outcome, dry_run in rows:
            key = AuditKey(str(kind), str(action), str(outcome), bool(dry_run))
            self._counts[key] = self._counts.get(key, 0) + 1
            self._last_id = int(row_id)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
