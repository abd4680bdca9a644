"""The action ladder's state in SQLite, beside the audit log, so that it survives a restart.

One row per job with ladder state (warnings sent, last warning time, action position,
failures, next retry, the idle streaks already acted on) as JSON, written after every
evaluation that changed it, read back when the collector starts: a job warned once before a
restart gets its second warning after it, never the first again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ladder_state (
    job_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated REAL NOT NULL
);
"""


class LadderStateTable:
    """Reads and writes the ``ladder_state`` table over a connection it is given (and
    owns from then on)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        conn.executescript(_SCHEMA)

    def save(self, changed: Mapping[str, Mapping[str, Any] | None], now: float) -> None:
        """Write each job's state (None: delete its row), in one transaction."""
        if not changed:
            return
        with self._conn:
            self._conn.execute("BEGIN")
            for job_id, state in changed.items():
                if state is None:
                    self._conn.execute("DELETE FROM ladder_state WHERE job_id = ?", (job_id,))
                else:
                    self._conn.execute(
                        "INSERT OR REPLACE INTO ladder_state (job_id, state, updated)"
                        " VALUES (?, ?, ?)",
                        (job_id, json.dumps(state), now),
                    )

    def load(self, keep: Collection[str]) -> dict[str, dict[str, Any]]:
        """The saved state of the jobs in ``keep`` (those still running); the rows of every
        other job are deleted (it ended while the collector was away)."""
        out: dict[str, dict[str, Any]] = {}
        gone: list[str] = []
        for job_id, text in self._conn.execute("SELECT job_id, state FROM ladder_state"):
            if job_id in keep:
                out[job_id] = json.loads(text)
            else:
                gone.append(job_id)
        if gone:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.executemany(
                    "DELETE FROM ladder_state WHERE job_id = ?", [(j,) for j in gone]
                )
        return out

    def close(self) -> None:
        self._conn.close()
