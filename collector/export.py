"""``gpuwarden export``: the stored windows and jobs of a time range as a replay trace.

Reads the collector's SQLite database through a read-only connection (safe beside a running
collector) and writes JSON Lines in the replay format (docs/policy.md): first one job line per
run of a job (a job id and its start time), then one sample line per stored GPU window,
sorted by window end. Job facts (user, account, partition, QOS, name, batch, requeue, Dask
worker, start) come from the facts the agents reported with the windows; a run's ``end`` is
its last window when one of its GPUs was later reported with another job, or free by a node
whose Slurm view was available (else ``null``: still running, as far as the store knows).
Each sample carries ``window_s``, the length of its report window, so a replay counts the
same time the collector did; the extra per-GPU fields (profiling counters) as ``extra``
(window means) and ``extra_max`` (maxima), and for a window an agent sampled, the number of
processes on the GPU (``processes``), so a site can tune the SM-activity rule, and see idle
MIG slices, on recorded data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gpuwarden.collector.layout_read import RawQuery, stored_reports
from gpuwarden.collector.rules import MIB
from gpuwarden.collector.store import SCHEMA_VERSION, StoreError, connect
from gpuwarden.collector.trace import dumps
from gpuwarden.common.types import GpuWindow, JobInfo


@dataclass(frozen=True, slots=True)
class ExportFilter:
    since: float | None = None
    until: float | None = None
    node: str = ""
    job_id: str = ""
    user: str = ""
    partition: str = ""

    @property
    def by_job(self) -> bool:
        return bool(self.job_id or self.user or self.partition)

    def wants(self, job: JobInfo | None) -> bool:
        if not self.by_job:
            return True
        if job is None:
            return False
        return (
            (not self.job_id or job.job_id == self.job_id)
            and (not self.user or job.user == self.user)
            and (not self.partition or job.partition == self.partition)
        )


@dataclass(frozen=True, slots=True)
class ExportSummary:
    jobs: int
    samples: int
    first_ts: float | None
    last_ts: float | None


@dataclass(slots=True)
class _Run:
    job: JobInfo
    first_start: float
    last_end: float
    gpus: dict[tuple[str, str], int] = field(default_factory=dict)
    ended: bool = False


_Row = tuple[str, str, float, float, GpuWindow, bool]


def _rows(conn: sqlite3.Connection, f: ExportFilter) -> Iterator[_Row]:
    """Every stored window the filter selects, by window end, then node and GPU."""
    q = RawQuery(
        node=f.node,
        job_id=f.job_id,
        since=f.since if f.since is not None else float("-inf"),
        until=f.until,
    )
    same_end: list[_Row] = []
    for _, node, start, end, slurm_ok, windows in stored_reports(conn, q):
        if same_end and same_end[0][3] != end:
            yield from sorted(same_end, key=lambda row: (row[0], row[1]))
            same_end = []
        same_end += [(node, g.uuid, start, end, g, slurm_ok) for g, _ in windows]
    yield from sorted(same_end, key=lambda row: (row[0], row[1]))


def _runs(conn: sqlite3.Connection, f: ExportFilter) -> list[_Run]:
    """Every run of a job in the range, in order of first window, with its end if known."""
    runs: dict[tuple[str, int], _Run] = {}
    holder: dict[tuple[str, str], tuple[str, int]] = {}
    for node, uuid, start, end, gpu, slurm_ok in _rows(conn, f):
        job = gpu.job
        where = (node, uuid)
        key = None if job is None else (job.job_id, job.start_time)
        prev = holder.get(where)
        if prev is not None and prev != key and (key is not None or slurm_ok):
            runs[prev].ended = True
            del holder[where]
        if job is None or key is None or not f.wants(job):
            continue
        run = runs.get(key)
        if run is None:
            run = runs[key] = _Run(job=job, first_start=start, last_end=end)
        run.last_end = max(run.last_end, end)
        run.gpus.setdefault(where, gpu.index)
        holder[where] = key
    return list(runs.values())


def _job_line(run: _Run) -> dict[str, Any]:
    job = run.job
    start = float(job.start_time) if job.start_time > 0 else run.first_start
    return {
        "type": "job",
        "job_id": job.job_id,
        "user": job.user,
        "account": job.account,
        "partition": job.partition,
        "qos": job.qos,
        "name": job.name,
        "start": start,
        "end": run.last_end if run.ended else None,
        "batch": job.batch,
        "requeue": job.requeue,
        "gpus": [{"node": n, "uuid": u, "index": i} for (n, u), i in run.gpus.items()],
        "dask": (
            {"scheduler": job.dask_scheduler, "worker": job.dask_worker}
            if job.is_dask_worker
            else None
        ),
    }


def _sample_line(node: str, uuid: str, start: float, end: float, g: GpuWindow) -> dict[str, Any]:
    util = None if "gpu_lost" in g.errors else g.util_max
    d: dict[str, Any] = {
        "type": "sample",
        "ts": end,
        "node": node,
        "uuid": uuid,
        "index": g.index,
        "util_gpu": util,
    }
    if util is not None and g.util_mean is not None:
        d["util_gpu_mean"] = min(g.util_mean, util)
    if g.mem_util_mean is not None:
        d["util_mem"] = g.mem_util_mean
    if g.mem_used_max_bytes is not None:
        d["mem_used_mib"] = g.mem_used_max_bytes / MIB
    if g.mem_total_bytes is not None:
        d["mem_total_mib"] = g.mem_total_bytes / MIB
    if g.power_mean_w is not None:
        d["power_w"] = g.power_mean_w
    if g.job is not None and g.job.cpu_util_pct is not None:
        d["cpu_util_pct"] = g.job.cpu_util_pct
    if end - start > 0:
        d["window_s"] = end - start
    if g.extra_mean:
        d["extra"] = dict(g.extra_mean)
    if g.extra_max:
        d["extra_max"] = dict(g.extra_max)
    if g.samples > 0:
        d["processes"] = len(g.processes)
    return d


def export_trace(db_path: Path, out: BinaryIO, f: ExportFilter) -> ExportSummary:
    """Write the trace of ``db_path`` selected by ``f`` to ``out``; raises StoreError when
    the database cannot be read."""
    if not db_path.exists():
        raise StoreError(f"no collector database at {db_path}")
    try:
        conn = connect(db_path, readonly=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {db_path} read-only: {exc}") from exc
    try:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is None or version[0] != str(SCHEMA_VERSION):
            raise StoreError(
                f"{db_path} has store schema {version[0] if version else 'none'}, not "
                f"{SCHEMA_VERSION}: start the collector on it once to bring it up to date"
            )
        runs = _runs(conn, f)
        for run in runs:
            out.write(dumps(_job_line(run)) + b"\n")
        samples = 0
        first = last = None
        for node, uuid, start, end, gpu, _ in _rows(conn, f):
            if not f.wants(gpu.job):
                continue
            out.write(dumps(_sample_line(node, uuid, start, end, gpu)) + b"\n")
            samples += 1
            first = end if first is None else first
            last = end
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {db_path}: {exc}") from exc
    finally:
        conn.close()
    return ExportSummary(jobs=len(runs), samples=samples, first_ts=first, last_ts=last)
