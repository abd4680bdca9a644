"""The store's SQLite connections, its write-ahead log, and the faults that are the
store's, not a report's."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class StoreError(RuntimeError):
    pass


class StoreUnavailable(StoreError):
    """The store cannot write now (disk full, I/O error, read-only): nobody's report is at
    fault; agents keep theirs in their spools and send them again later."""


BUSY_TIMEOUT_MS = 10_000
# What the write-ahead log is cut back to once a checkpoint has emptied it. It stays near
# 4 MiB under steady ingest (SQLite checkpoints every 1,000 pages); a reader that holds one
# snapshot for long (an open `sqlite3` shell) lets it grow by everything written
# meanwhile, and without a limit the file kept that size for good.
WAL_LIMIT_BYTES = 16 << 20

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
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
    return conn


def wal_bytes(path: Path) -> int:
    """The size of the database ``path``'s write-ahead log (0: none)."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size
    except FileNotFoundError:
        return 0


def checkpoint(path: Path) -> int:
    """Give back the disk a write-ahead log grew to while a long reader held its snapshot:
    when the ``-wal`` file is over :data:`WAL_LIMIT_BYTES`, copy it into the database beside
    ingest (PASSIVE: writers go on), then truncate it unless a reader still uses it (nothing
    waits: the next call tries again). Returns the ``-wal`` file's size after."""
    if wal_bytes(path) <= WAL_LIMIT_BYTES:
        return wal_bytes(path)
    conn = connect(path)  # its own: the store's writer may be in a transaction
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if not busy and frames == copied:  # only the file's length is left to give back
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    return wal_bytes(path)
