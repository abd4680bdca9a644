"""How raw windows lie in the store (schema version 2): one row per report.

A report of N GPUs is one ``reports`` row: its key (node, seq), its times, and ``data``,
zlib over the report's GPU windows. Each window is kept as received (its
``gpuwarden.v1.GpuWindow`` bytes) less what is the same report after report, which lives
once in a dictionary table and is referenced by a small integer key:

- ``gpus``: a GPU's identity on a node (uuid, index, name, parent uuid, minor numbers);
- ``jobs``: a job's facts (id, user, account, partition, name, start time, Dask worker...):
  one row per distinct set of facts, so a requeued run (a new start time) gets its own;
  the job's CPU use changes every window and stays in the window;
- ``agents``: the agent id a report names.

Reading a window back is parsing the concatenation identity + job facts + window (protobuf
merges them), so every field a reader uses comes back as received, processes, errors,
profiling fields and MIG identity included. ``report_jobs`` maps each job key to the
reports holding it (history by job); the only other indexes are (node, seq), which
de-duplicates, (node, window_end) and (window_end).

This module writes the layout (:class:`Writer`); :mod:`layout_read` reads it back.

``data`` is: ``<H`` count N, then N x ``<II`` (gpu key, job key or 0), then N x ``<I`` byte
lengths, then the N windows' bytes.
"""

from __future__ import annotations

import sqlite3
import struct
import zlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gpuwarden.common.convert import gpu_to_pb
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    window_start REAL NOT NULL,
    window_end REAL NOT NULL,
    received REAL NOT NULL,
    slurm_available INTEGER NOT NULL,
    agent INTEGER NOT NULL,
    gpus INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS reports_node_seq ON reports (node, seq);
CREATE INDEX IF NOT EXISTS reports_node_end ON reports (node, window_end);
CREATE INDEX IF NOT EXISTS reports_end ON reports (window_end);
CREATE TABLE IF NOT EXISTS report_jobs (
    job INTEGER NOT NULL,
    report INTEGER NOT NULL,
    PRIMARY KEY (job, report)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    facts BLOB NOT NULL,
    UNIQUE (job_id, facts)
);
CREATE TABLE IF NOT EXISTS gpus (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    uuid TEXT NOT NULL,
    ident BLOB NOT NULL,
    UNIQUE (node, uuid, ident)
);
CREATE INDEX IF NOT EXISTS gpus_uuid ON gpus (uuid);
CREATE TABLE IF NOT EXISTS agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL UNIQUE
);
"""

INSERT_REPORT = (
    "INSERT OR IGNORE INTO reports (node, seq, window_start, window_end, received,"
    " slurm_available, agent, gpus, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_REPORT_JOB = "INSERT OR IGNORE INTO report_jobs VALUES (?, ?)"
ZLIB_LEVEL = 1  # 6 is slower on a report for 5 % less (2 B per window)

_IDENTITY_FIELDS = (
    "uuid",
    "index",
    "name",
    "parent_uuid",
    "minor_number",
    "gpu_instance_id",
    "mig_caps_minor",
)
_COUNT = struct.Struct("<H")
MAX_GPUS = 0xFFFF


def _identity(node: str, g: GpuWindow) -> tuple[object, ...]:
    return (
        node,
        g.uuid,
        g.index,
        g.name,
        g.parent_uuid,
        g.minor_number,
        g.gpu_instance_id,
        g.mig_caps_minor,
    )


def _facts(j: JobInfo) -> tuple[object, ...]:
    return (
        j.job_id,
        j.step,
        j.user,
        j.account,
        j.partition,
        j.name,
        j.qos,
        j.batch,
        j.requeue,
        j.start_time,
        j.dask_scheduler,
        j.dask_worker,
        j.source,
    )


def strip(msg: pb.GpuWindow) -> bytes:
    """``msg``'s bytes less its identity and job facts (its job's CPU use stays)."""
    for name in _IDENTITY_FIELDS:
        msg.ClearField(name)
    if msg.HasField("job"):
        cpu = msg.job.cpu_util_pct if msg.job.HasField("cpu_util_pct") else None
        msg.ClearField("job")
        if cpu is not None:
            msg.job.cpu_util_pct = cpu
    msg.DiscardUnknownFields()
    return msg.SerializeToString()


_MAX_INT = 2**63 - 1  # SQLite's INTEGER, where roll-ups keep memory figures


def _check_storable(g: GpuWindow) -> None:
    """Refuse what the roll-up columns cannot hold (the ingest path has refused it
    already; this keeps a report that skipped validation from breaking a later write)."""
    mem, total, util, power = g.mem_used_max_bytes, g.mem_total_bytes, g.util_mean, g.power_mean_w
    if (
        (mem is not None and not 0 <= mem <= _MAX_INT)
        or (total is not None and not 0 <= total <= _MAX_INT)
        or util != util  # NaN: a sum SQLite would store as NULL
        or power != power
    ):
        raise OverflowError(
            f"GPU {g.uuid}: mem_used_max_bytes={mem}, mem_total_bytes={total},"
            f" util_mean={util}, power_mean_w={power}: cannot be stored"
        )


def pack(keys: Sequence[int], windows: Sequence[bytes]) -> bytes:
    """The ``data`` of a report: ``keys`` holds (gpu key, job key) per window, flattened."""
    lengths = array("I", [len(w) for w in windows])
    return zlib.compress(
        b"".join(
            (_COUNT.pack(len(windows)), array("I", keys).tobytes(), lengths.tobytes(), *windows)
        ),
        ZLIB_LEVEL,
    )


def unpack(data: bytes) -> list[tuple[int, int, bytes]]:
    """(gpu key, job key, window bytes) per window of a report's ``data``."""
    raw = zlib.decompress(data)
    (n,) = _COUNT.unpack_from(raw)
    keys = array("I")
    keys.frombytes(raw[2 : 2 + 8 * n])
    lengths = array("I")
    lengths.frombytes(raw[2 + 8 * n : 2 + 12 * n])
    out = []
    at = 2 + 12 * n
    for i, length in enumerate(lengths):
        out.append((keys[2 * i], keys[2 * i + 1], raw[at : at + length]))
        at += length
    if at != len(raw):
        raise ValueError(f"report data of {len(raw)} bytes holds {at}")
    return out


def job_keys_of(data: bytes) -> set[int]:
    """The job keys a report's ``data`` references."""
    return {jk for _, jk, _ in unpack(data) if jk}


MAX_CACHED = 50_000  # entries per dictionary cache; a miss costs one SELECT by key


def make_room(cache: dict[Any, Any], limit: int) -> None:
    """Forget all ``cache`` holds once it has ``limit`` entries (a miss reads its row
    again): dictionary keys keep coming (every job, every MIG instance after a
    reconfiguration), and a cache of them must not grow for the collector's life."""
    if len(cache) >= limit:
        cache.clear()


@dataclass(frozen=True, slots=True)
class ReportRows:
    """What one report adds: its ``reports`` row (less its id) and its job keys."""

    report: tuple[object, ...]
    job_keys: tuple[int, ...]


class Writer:
    """Builds the rows of reports, adding dictionary entries as new identities and job
    facts appear. Use it on the connection of the transaction: dictionary rows added in a
    transaction that rolls back are forgotten with :meth:`rollback`."""

    def __init__(self, conn: sqlite3.Connection, *, max_cached: int = MAX_CACHED) -> None:
        self._conn = conn
        self._max_cached = max_cached
        self._gpus: dict[tuple[object, ...], int] = {}
        self._jobs: dict[tuple[object, ...], int] = {}
        self._agents: dict[str, int] = {}
        self._added: list[tuple[dict[tuple[object, ...], int] | dict[str, int], object]] = []

    def __len__(self) -> int:
        """Dictionary keys cached (bounded by ``max_cached`` per dictionary)."""
        return len(self._gpus) + len(self._jobs) + len(self._agents)

    def commit(self) -> None:
        self._added.clear()

    def rollback(self) -> None:
        for cache, key in self._added:
            cache.pop(key, None)  # type: ignore[call-overload]
        self._added.clear()

    def _key(self, select: str, insert: str, params: tuple[object, ...]) -> int:
        row = self._conn.execute(select, params).fetchone()
        if row is None:
            cur = self._conn.execute(insert, params)
            assert cur.lastrowid is not None
            return cur.lastrowid
        return int(row[0])

    def gpu_key(self, node: str, g: GpuWindow) -> int:
        ident = _identity(node, g)
        key = self._gpus.get(ident)
        if key is None:
            blank = GpuWindow(
                uuid=g.uuid,
                index=g.index,
                name=g.name,
                parent_uuid=g.parent_uuid,
                minor_number=g.minor_number,
                gpu_instance_id=g.gpu_instance_id,
                mig_caps_minor=g.mig_caps_minor,
            )
            params = (node, g.uuid, gpu_to_pb(blank).SerializeToString())
            make_room(self._gpus, self._max_cached)
            key = self._gpus[ident] = self._key(
                "SELECT id FROM gpus WHERE node = ? AND uuid = ? AND ident = ?",
                "INSERT INTO gpus (node, uuid, ident) VALUES (?, ?, ?)",
                params,
            )
            self._added.append((self._gpus, ident))
        return key

    def job_key(self, job: JobInfo) -> int:
        facts = _facts(job)
        key = self._jobs.get(facts)
        if key is None:
            msg = pb.GpuWindow()
            msg.job.CopyFrom(gpu_to_pb(GpuWindow(uuid="", index=0, job=job)).job)
            msg.job.ClearField("cpu_util_pct")
            params = (job.job_id, msg.SerializeToString())
            make_room(self._jobs, self._max_cached)
            key = self._jobs[facts] = self._key(
                "SELECT id FROM jobs WHERE job_id = ? AND facts = ?",
                "INSERT INTO jobs (job_id, facts) VALUES (?, ?)",
                params,
            )
            self._added.append((self._jobs, facts))
        return key

    def agent_key(self, agent_id: str) -> int:
        key = self._agents.get(agent_id)
        if key is None:
            make_room(self._agents, self._max_cached)
            key = self._agents[agent_id] = self._key(
                "SELECT id FROM agents WHERE agent_id = ?",
                "INSERT INTO agents (agent_id) VALUES (?)",
                (agent_id,),
            )
            self._added.append((self._agents, agent_id))
        return key

    def forget_jobs(self, keys: Iterable[int]) -> None:
        """Job keys whose rows were deleted (retention): built again when seen again."""
        gone = set(keys)
        for facts in [f for f, k in self._jobs.items() if k in gone]:
            del self._jobs[facts]

    def rows(
        self, r: NodeReport, received: float, received_pb: Sequence[pb.GpuWindow] | None
    ) -> ReportRows:
        """The rows of ``r``. ``received_pb``: its GPU windows' messages as received, stored
        as they are less what the dictionaries hold (:func:`strip` clears those fields in
        them); None to encode the windows here."""
        if len(r.gpus) > MAX_GPUS:
            raise ValueError(f"{len(r.gpus)} GPU windows in one report (limit {MAX_GPUS})")
        if received_pb is not None and len(received_pb) != len(r.gpus):
            raise ValueError(f"{len(received_pb)} received windows for {len(r.gpus)} GPUs")
        keys: list[int] = []
        windows: list[bytes] = []
        job_keys: list[int] = []
        for i, g in enumerate(r.gpus):
            _check_storable(g)
            msg = gpu_to_pb(g) if received_pb is None else received_pb[i]
            job_key = 0 if g.job is None else self.job_key(g.job)
            keys += (self.gpu_key(r.node, g), job_key)
            windows.append(strip(msg))
            if job_key and job_key not in job_keys:
                job_keys.append(job_key)
        report = (
            r.node,
            r.seq,
            r.window_start,
            r.window_end,
            received,
            int(r.slurm.available),
            self.agent_key(r.agent_id),
            len(r.gpus),
            pack(keys, windows),
        )
        return ReportRows(report, tuple(job_keys))
