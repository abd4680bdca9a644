"""A notifier's durable outbox: alerts waiting for delivery, in a SQLite file.

Alerts are rows until delivered, so a broker or mail server outage, and a collector restart
in the middle of one, lose nothing. A row leaves the outbox only after its transport took
it (deleted in the same transaction that counts it delivered); a crash between the two can
deliver it again, which receivers see by its ``alert_id`` (at-least-once).

The outbox also remembers when each finding was last queued (``dedup_key`` -> time of the
alert), so the same finding is not told twice within a period; and it keeps counters that
survive restarts.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.common.alert import Alert

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL UNIQUE,
    dedup_key TEXT NOT NULL,
    queued_ts REAL NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_ts REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_try_ts, id);
CREATE TABLE IF NOT EXISTS told (dedup_key TEXT PRIMARY KEY, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS given_up (
    id INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    given_up_ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

COUNTERS = ("queued", "delivered", "failures", "suppressed", "given_up", "dropped")


@dataclass(frozen=True, slots=True)
class Pending:
    row_id: int
    alert: Alert
    attempts: int
    queued_ts: float


class Outbox:
    """Thread-safe: the hub's thread queues, the delivery thread takes and settles."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def _bump(self, name: str, by: int = 1) -> None:
        self._conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def put(self, alert: Alert, dedup_key: str, period_s: float, max_rows: int, now: float) -> bool:
        """Queue ``alert`` (at wall-clock ``now``) unless its finding was told less than
        ``period_s`` before it (by the alerts' own times).
        Returns whether it was queued. Past ``max_rows`` the oldest row is dropped (counted;
        the caller logs it)."""
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            row = self._conn.execute(
                "SELECT ts FROM told WHERE dedup_key = ?", (dedup_key,)
            ).fetchone()
            if row is not None and abs(alert.ts - row[0]) < period_s:
                self._bump("suppressed")
                return False
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO outbox (alert_id, dedup_key, queued_ts, payload,"
                " next_try_ts) VALUES (?, ?, ?, ?, 0)",
                (alert.alert_id, dedup_key, now, json.dumps(alert.to_json())),
            )
            if cur.rowcount == 0:  # the very same alert again
                self._bump("suppressed")
                return False
            self._conn.execute(
                "INSERT INTO told (dedup_key, ts) VALUES (?, ?)"
                " ON CONFLICT (dedup_key) DO UPDATE SET ts = excluded.ts",
                (dedup_key, alert.ts),
            )
            self._bump("queued")
            (n,) = self._conn.execute("SELECT count(*) FROM outbox").fetchone()
            if n > max_rows:
                self._conn.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                    (n - max_rows,),
                )
                self._bump("dropped", n - max_rows)
            return True

    def due(self, now: float, limit: int = 100) -> list[Pending]:
        """Rows whose next try is due, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, payload, attempts, queued_ts FROM outbox WHERE next_try_ts <= ?"
                " ORDER BY id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Pending(r[0], Alert.from_json(json.loads(r[1])), r[2], r[3]) for r in rows]

    def next_try_ts(self) -> float | None:
        with self._lock:
            (ts,) = self._conn.execute("SELECT min(next_try_ts) FROM outbox").fetchone()
        return None if ts is None else float(ts)

    def delivered(self, row_id: int) -> None:
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            self._bump("delivered")

    def failed(self, row_id: int, error: str, next_try_ts: float) -> None:
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_try_ts = ?, last_error = ?"
                " WHERE id = ?",
                (next_try_ts, error[:500], row_id),
            )
            self._bump("failures")

    def give_up(self, row_id: int, error: str, now: float) -> None:
        """Move a row that kept failing to ``given_up`` (kept for the sysadmin, counted)."""
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "INSERT INTO given_up (alert_id, payload, attempts, last_error, given_up_ts)"
                " SELECT alert_id, payload, attempts + 1, ?, ? FROM outbox WHERE id = ?",
                (error[:500], now, row_id),
            )
            self._conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            self._bump("given_up")

    def forget_told_before(self, ts: float) -> None:
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM told WHERE ts < ?", (ts,))

    def counters(self) -> dict[str, int]:
        with self._lock:
            got = dict(self._conn.execute("SELECT name, value FROM counters").fetchall())
            (pending,) = self._conn.execute("SELECT count(*) FROM outbox").fetchone()
        out = {name: int(got.get(name, 0)) for name in COUNTERS}
        out["pending"] = int(pending)
        return out

    def close(self) -> None:
        with self._lock:
            self._conn.close()
