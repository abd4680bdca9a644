"""Reading raw windows back from the store's layout (:mod:`layout` describes it): the
dictionaries' rows, cached per reader connection, and the reports a history query matches.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gpuwarden.collector.layout import MAX_CACHED, make_room, unpack
from gpuwarden.common.convert import gpu_from_pb
from gpuwarden.common.types import GpuWindow, JobInfo
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb


class Reader:
    """Turns ``data`` back into windows, reading the dictionaries through ``conn`` (keys
    are never reused, so what it has read stays true). Not thread-safe: one per reader
    connection, used under that connection's lock."""

    def __init__(self, conn: sqlite3.Connection, *, max_cached: int = MAX_CACHED) -> None:
        self._conn = conn
        self._max_cached = max_cached
        self._idents: dict[int, bytes] = {}
        self._facts: dict[int, bytes] = {}

    def __len__(self) -> int:
        """Dictionary rows cached (bounded by ``max_cached`` per dictionary)."""
        return len(self._idents) + len(self._facts)

    def _ident(self, key: int) -> bytes:
        b = self._idents.get(key)
        if b is None:
            row = self._conn.execute("SELECT ident FROM gpus WHERE id = ?", (key,)).fetchone()
            if row is None:
                raise ValueError(f"stored window names GPU key {key}, which the store lacks")
            make_room(self._idents, self._max_cached)
            b = self._idents[key] = bytes(row[0])
        return b

    def _job(self, key: int) -> bytes:
        if not key:
            return b""
        b = self._facts.get(key)
        if b is None:
            row = self._conn.execute("SELECT facts FROM jobs WHERE id = ?", (key,)).fetchone()
            if row is None:
                raise ValueError(f"stored window names job key {key}, which the store lacks")
            make_room(self._facts, self._max_cached)
            b = self._facts[key] = bytes(row[0])
        return b

    def gpu(self, gpu_key: int, job_key: int, window: bytes) -> GpuWindow:
        return gpu_from_pb(
            pb.GpuWindow.FromString(self._ident(gpu_key) + self._job(job_key) + window)
        )

    def job_facts(self, job_key: int) -> JobInfo | None:
        return gpu_from_pb(pb.GpuWindow.FromString(self._job(job_key))).job

    def gpu_keys(self, uuid: str) -> tuple[set[int], list[str]]:
        """The keys of ``uuid`` and the nodes that reported it."""
        rows = self._conn.execute("SELECT id, node FROM gpus WHERE uuid = ?", (uuid,)).fetchall()
        return {int(k) for k, _ in rows}, sorted({str(n) for _, n in rows})

    def job_keys(self, job_id: str) -> set[int]:
        rows = self._conn.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchall()
        return {int(k) for (k,) in rows}


@dataclass(frozen=True, slots=True)
class RawQuery:
    node: str = ""
    uuid: str = ""
    job_id: str = ""
    since: float = 0.0
    until: float | None = None


_COLS = "r.id, r.node, r.window_start, r.window_end, r.slurm_available, r.data"
StoredReport = tuple[int, str, float, float, bool, list[tuple[GpuWindow, int]]]


PAGE_REPORTS = 1000  # reports per read transaction of :func:`stored_reports`


def read_reports(
    reader: Reader, conn: sqlite3.Connection, q: RawQuery, *, page: int = 0
) -> Iterator[StoredReport]:
    """Stored reports matching ``q``, oldest window end first (then as stored): (id, node,
    window_start, window_end, slurm_available, [(window, job key)]) with only the windows
    that match. Lazy: stop iterating and nothing more is read.

    ``page``: 0 reads in one statement (one snapshot, held until the iteration ends: short
    reads under the store's lock); N reads N reports per statement, each its own snapshot,
    so a long or paused read (an export into a slow pipe) never holds the write-ahead log
    back. Paged, reports stored meanwhile may come too (those ending after the page read)."""
    where = ["r.window_end >= ?"]
    params: list[object] = [q.since]
    if q.until is not None:
        where.append("r.window_end <= ?")
        params.append(q.until)
    gpu_keys: set[int] | None = None
    job_keys: set[int] | None = None
    source = "reports r"
    if q.node:
        where.append("r.node = ?")
        params.append(q.node)
    if q.uuid:
        gpu_keys, nodes = reader.gpu_keys(q.uuid)
        if not nodes:
            return
        where.append(f"r.node IN ({', '.join('?' * len(nodes))})")
        params += nodes
    if q.job_id:
        job_keys = reader.job_keys(q.job_id)
        if not job_keys:
            return
        # report_jobs first: a job's reports are few beside everything in the time range
        source = "report_jobs j CROSS JOIN reports r ON r.id = j.report"
        where.append(f"j.job IN ({', '.join('?' * len(job_keys))})")
        params += sorted(job_keys)
    sql = (
        f"SELECT {_COLS} FROM {source} WHERE "  # noqa: S608 (fixed clauses; values are bound)
        + " AND ".join(where)
    )
    order = " ORDER BY r.window_end, r.id"
    rows: Iterable[tuple[Any, ...]] = (
        _pages(conn, sql, order, params, page) if page else conn.execute(sql + order, params)
    )
    last = -1
    for rid, node, ws, we, slurm_ok, data in rows:
        if rid == last:  # a report holding two fact sets of the job: listed once
            continue
        last = rid
        windows = [
            (reader.gpu(gk, jk, w), jk)
            for gk, jk, w in unpack(data)
            if (gpu_keys is None or gk in gpu_keys) and (job_keys is None or jk in job_keys)
        ]
        if windows:
            yield int(rid), str(node), float(ws), float(we), bool(slurm_ok), windows


def _pages(
    conn: sqlite3.Connection, sql: str, order: str, params: list[object], page: int
) -> Iterator[tuple[Any, ...]]:
    """The rows of ``sql`` in order, ``page`` rows per statement, each read to its end
    before the first is handed on (so no snapshot outlives a page)."""
    after: list[object] = []
    while True:
        cont = " AND (r.window_end, r.id) > (?, ?)" if after else ""
        rows = conn.execute(sql + cont + order + " LIMIT ?", [*params, *after, page]).fetchall()
        yield from rows
        if len(rows) < page:
            return
        after = [rows[-1][3], rows[-1][0]]  # a report listed twice ends at its last row


def stored_reports(
    conn: sqlite3.Connection, q: RawQuery | None = None, *, page: int = PAGE_REPORTS
) -> Iterator[StoredReport]:
    """:func:`read_reports` on a connection of its own (exports, tools, tests), ``page``
    reports per read transaction."""
    return read_reports(Reader(conn), conn, q or RawQuery(since=float("-inf")), page=page)
