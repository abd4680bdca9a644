"""The store's SQLite connections and the faults that are the store's, not a report's."""

from __future__ import annotations

import sqlite3
from pathlib import Path


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
