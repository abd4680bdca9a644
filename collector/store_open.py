"""Opening the store's file: its schema version (migrating a version-1 store in place), the
``meta`` table's figures, and the roll-up sums a stop left unwritten."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from gpuwarden.collector import layout, migrate, rollup
from gpuwarden.collector.layout_read import Reader
from gpuwarden.collector.retention import RAW
from gpuwarden.collector.rollup_pending import Pending
from gpuwarden.collector.store_conn import StoreError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"

# meta keys: per resolution, the instant before which rows have been deleted
PRUNED_KEY = {RAW: "pruned_before_raw", 60: "pruned_before_60", 3600: "pruned_before_3600"}


def open_schema(conn: sqlite3.Connection, rows: layout.Writer, path: Path) -> None:
    """Create the tables of a new store, migrate a version-1 one, refuse a newer one."""
    conn.execute(_META)
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    version = None if row is None else row[0]
    if version == "1":
        migrate.v1_to_v2(conn, rows, rollup.SCHEMA)
    elif version is not None and version != str(SCHEMA_VERSION):
        raise StoreError(
            f"{path}: schema version {version} is not {SCHEMA_VERSION}; "
            "this gpuwarden cannot read it (a newer gpuwarden wrote it: run that one)"
        )
    conn.executescript(layout.SCHEMA)
    conn.executescript(rollup.SCHEMA)
    if version is None:
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def meta(conn: sqlite3.Connection, key: str) -> tuple[str] | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else (str(row[0]),)


def count_windows(conn: sqlite3.Connection) -> int:
    """The stored windows, kept in ``meta``: counting walks the whole table."""
    v = meta(conn, "windows")
    if v is not None:
        return int(v[0])
    n = int(conn.execute("SELECT coalesce(sum(gpus), 0) FROM reports").fetchone()[0])
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('windows', ?)", (str(n),))
    return n


def pruned_before(conn: sqlite3.Connection) -> dict[int, float]:
    """Per resolution, the instant before which retention has deleted its rows."""
    return {
        res: float(v[0]) if (v := meta(conn, key)) is not None else float("-inf")
        for res, key in PRUNED_KEY.items()
    }


def recover_rollups(conn: sqlite3.Connection, reader: Reader, pending: Pending) -> None:
    """Add again the windows of reports whose roll-up sums were not written before the
    collector stopped (see :mod:`rollup_pending`)."""
    v = meta(conn, "rollup_safe")
    safe = int(v[0]) if v is not None else 0
    marks = dict(conn.execute("SELECT node, upto FROM rollup_marks").fetchall())
    n = 0
    rows = conn.execute(
        "SELECT id, node, window_start, window_end, data FROM reports WHERE id > ? ORDER BY id",
        (safe,),
    )
    for rid, node, ws, we, data in rows:
        if rid <= marks.get(node, 0):
            continue
        gpus = [reader.gpu(gk, jk, w) for gk, jk, w in layout.unpack(data)]
        pending.add(int(rid), str(node), float(ws), float(we), gpus)
        n += 1
    if n:
        log.info("roll-ups: %d stored reports added again after a restart", n)
