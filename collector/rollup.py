"""Roll-ups: per GPU and per job, 1-minute and 1-hour aggregates of the stored windows.

Raw windows are kept for a short retention; the roll-ups for much longer, so history over
weeks and months stays small and fast. A roll-up row is one GPU of one node, for one job (or
none), over one bucket of ``res`` seconds. It keeps sums and counts, not means, so rows can
be added to as windows arrive:

- windows are added up in memory as they are stored (:mod:`rollup_pending`) and those sums
  added to the rows here about once a minute per node (:data:`UPSERT`), so a window that
  comes late (an agent's spool replayed after an outage) lands in its bucket; nothing waits
  for a bucket to close and nothing has to be recomputed;
- a window belongs to the bucket that holds its midpoint;
- means are weighted by the window's sample count; missing values count for nothing (a
  bucket whose windows had no utilisation has ``util_mean = None``, never 0).

Per-job figures are the rows of that job (indexed by job id); per-GPU figures are the rows
of that GPU.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from gpuwarden.common.types import GpuWindow, JobInfo, WindowRecord

RESOLUTIONS: tuple[int, ...] = (60, 3600)  # seconds: 1 minute, 1 hour

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollups (
    res INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    node TEXT NOT NULL,
    uuid TEXT NOT NULL,
    job_id TEXT NOT NULL,
    gpu_index INTEGER NOT NULL,
    name TEXT NOT NULL,
    user TEXT NOT NULL,
    account TEXT NOT NULL,
    partition TEXT NOT NULL,
    windows INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    first_start REAL NOT NULL,
    last_end REAL NOT NULL,
    util_sum REAL NOT NULL,
    util_n INTEGER NOT NULL,
    util_max REAL,
    util_min REAL,
    mem_used_max_bytes INTEGER,
    mem_total_bytes INTEGER,
    power_sum REAL NOT NULL,
    power_n INTEGER NOT NULL,
    temperature_max_c REAL,
    allocated_windows INTEGER NOT NULL,
    PRIMARY KEY (res, node, uuid, job_id, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollups_job ON rollups (res, job_id, bucket) WHERE job_id != '';
CREATE INDEX IF NOT EXISTS rollups_uuid ON rollups (res, uuid, bucket);
CREATE INDEX IF NOT EXISTS rollups_bucket ON rollups (res, bucket);
CREATE TABLE IF NOT EXISTS rollup_marks (
    node TEXT PRIMARY KEY,
    upto INTEGER NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS = (
    "res, bucket, node, uuid, job_id, gpu_index, name, user, account, partition, windows,"
    " samples, first_start, last_end, util_sum, util_n, util_max, util_min,"
    " mem_used_max_bytes, mem_total_bytes, power_sum, power_n, temperature_max_c,"
    " allocated_windows"
)


def _larger(col: str, fn: str = "max") -> str:
    """``col`` updated with the incoming value; NULL (missing) on either side loses."""
    return (
        f"{col} = CASE WHEN excluded.{col} IS NULL THEN {col} WHEN {col} IS NULL THEN "
        f"excluded.{col} ELSE {fn}({col}, excluded.{col}) END"
    )


UPSERT = (
    f"INSERT INTO rollups ({_COLUMNS}) VALUES ({', '.join('?' * 24)})"  # noqa: S608 (constants)
    " ON CONFLICT (res, node, uuid, job_id, bucket) DO UPDATE SET"
    " gpu_index = excluded.gpu_index, name = excluded.name, user = excluded.user,"
    " account = excluded.account, partition = excluded.partition,"
    " windows = windows + excluded.windows, samples = samples + excluded.samples,"
    " first_start = min(first_start, excluded.first_start),"
    " last_end = max(last_end, excluded.last_end),"
    " util_sum = util_sum + excluded.util_sum, util_n = util_n + excluded.util_n,"
    f" {_larger('util_max')}, {_larger('util_min', 'min')},"
    f" {_larger('mem_used_max_bytes')}, {_larger('mem_total_bytes')},"
    " power_sum = power_sum + excluded.power_sum, power_n = power_n + excluded.power_n,"
    f" {_larger('temperature_max_c')},"
    " allocated_windows = allocated_windows + excluded.allocated_windows"
)


def bucket_of(window_start: float, window_end: float, res: int) -> int:
    """The bucket (its start, Unix seconds) that holds the window's midpoint."""
    return math.floor((window_start + window_end) / 2.0 / res) * res


def prune_step(conn: sqlite3.Connection, res: int, older_than: float, batch: int) -> int:
    """Delete at most ``batch`` roll-up rows of resolution ``res`` whose bucket ended before
    ``older_than``; returns how many (0: nothing older is left)."""
    cur = conn.execute(
        "DELETE FROM rollups WHERE (res, node, uuid, job_id, bucket) IN ("
        " SELECT res, node, uuid, job_id, bucket FROM rollups"
        " WHERE res = ? AND bucket < ? LIMIT ?)",
        (res, older_than - res, batch),
    )
    return cur.rowcount


@dataclass(frozen=True, slots=True)
class RollupQuery:
    res: int
    node: str = ""
    uuid: str = ""
    job_id: str = ""
    since: float = 0.0
    until: float | None = None
    limit: int = 10_000


def data_span(
    conn: sqlite3.Connection, node: str, uuid: str, job_id: str
) -> tuple[float, float] | None:
    """From when to when roll-ups hold data matching the filters (to the minute where the
    1-minute roll-ups still have it, else to the hour); None when they hold none."""
    for res in RESOLUTIONS:
        where, params = _filters(res, node, uuid, job_id)
        row = conn.execute(
            "SELECT min(bucket), max(bucket) FROM rollups WHERE "  # noqa: S608 (fixed columns)
            + " AND ".join(where),
            params,
        ).fetchone()
        if row is not None and row[0] is not None:
            return float(row[0]), float(row[1]) + res
    return None


def _filters(res: int, node: str, uuid: str, job_id: str) -> tuple[list[str], list[object]]:
    where = ["res = ?"]
    params: list[object] = [res]
    for col, value in (("node", node), ("uuid", uuid), ("job_id", job_id)):
        if value:
            where.append(f"{col} = ?")
            params.append(value)
    return where, params


def history(conn: sqlite3.Connection, q: RollupQuery) -> tuple[list[WindowRecord], bool]:
    """Roll-up rows as windows (one per GPU, job and bucket), oldest first; True when cut
    at ``q.limit``. ``window_start`` / ``window_end`` are the first and last instants the
    bucket's windows covered; means are sample-weighted; ``temperature_c`` is the maximum."""
    where, params = _filters(q.res, q.node, q.uuid, q.job_id)
    where += ["bucket >= ?", "last_end >= ?"]
    params += [math.floor(q.since / q.res) * q.res - q.res, q.since]
    if q.until is not None:
        where.append("last_end <= ?")
        params.append(q.until)
    params.append(q.limit + 1)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM rollups WHERE "  # noqa: S608 (fixed column names; values bound)
        + " AND ".join(where)
        + " ORDER BY bucket, node, uuid, job_id LIMIT ?",
        params,
    ).fetchall()
    return [_record(row) for row in rows[: q.limit]], len(rows) > q.limit


def _record(row: Sequence[object]) -> WindowRecord:
    (
        _res,
        _bucket,
        node,
        uuid,
        job_id,
        index,
        name,
        user,
        account,
        partition,
        _windows,
        samples,
        first_start,
        last_end,
        util_sum,
        util_n,
        util_max,
        util_min,
        mem_used_max,
        mem_total,
        power_sum,
        power_n,
        temp_max,
        allocated,
    ) = row
    job = (
        JobInfo(job_id=str(job_id), user=str(user), account=str(account), partition=str(partition))
        if job_id
        else None
    )
    un, pn = int(util_n), int(power_n)  # type: ignore[call-overload]
    gpu = GpuWindow(
        uuid=str(uuid),
        index=int(index),  # type: ignore[call-overload]
        name=str(name),
        samples=int(samples),  # type: ignore[call-overload]
        util_mean=float(util_sum) / un if un else None,  # type: ignore[arg-type]
        util_max=_opt_float(util_max),
        util_min=_opt_float(util_min),
        mem_used_max_bytes=None if mem_used_max is None else int(mem_used_max),  # type: ignore[call-overload]
        mem_total_bytes=None if mem_total is None else int(mem_total),  # type: ignore[call-overload]
        power_mean_w=float(power_sum) / pn if pn else None,  # type: ignore[arg-type]
        temperature_c=_opt_float(temp_max),
        job=job,
        allocated=int(allocated) > 0,  # type: ignore[call-overload]
    )
    return WindowRecord(
        node=str(node),
        window_start=float(first_start),  # type: ignore[arg-type]
        window_end=float(last_end),  # type: ignore[arg-type]
        gpu=gpu,
    )


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
