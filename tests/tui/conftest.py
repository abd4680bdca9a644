"""A real collector for the dashboard's tests, in a thread of its own (snapshot tests run the
app in their own event loop), filled with a small cluster whose every shown value is fixed:
three nodes, jobs of several users, accounts and partitions, a GPU idle with a process, two
allocated but empty, a lost GPU, a card cut into MIG instances, and audit records."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gpuwarden.collector.admin import attach_admin
from gpuwarden.collector.audit import AuditLog
from gpuwarden.collector.enforce import AuditQuery
from gpuwarden.collector.policy import Policy, PolicySet
from gpuwarden.collector.server import Collector
from gpuwarden.collector.store import connect
from gpuwarden.common.types import (
    AuditRecord,
    GpuWindow,
    JobInfo,
    NodeReport,
    ProcessInfo,
)
from gpuwarden.query.config import ClientConfig
from gpuwarden.tui.app import TopApp

T = TypeVar("T")
GIB = 1 << 30
HISTORY_WINDOWS = 30  # one a minute over the last half hour


def job(job_id: str, user: str, account: str, partition: str, **kw: Any) -> JobInfo:
    return JobInfo(job_id=job_id, user=user, account=account, partition=partition, **kw)


ALICE = job("7001", "alice", "physics", "gpu", requeue=True)
BOB = job("7002", "bob", "chem", "gpu")
CAROL = job("7003", "carol", "bio", "long", requeue=True)
DAVE = job(
    "7004",
    "dave",
    "physics",
    "debug",
    dask_scheduler="tcp://10.0.0.9:8786",
    dask_worker="SLURMCluster-1",
)
ERIN = job("7005", "erin", "astro", "mig")
FRANK = job("7006", "frank", "astro", "mig")
BOB2 = job("7007", "bob", "chem", "gpu")


def gpu(
    node: str,
    i: int,
    util: float | None,
    job_: JobInfo | None,
    *,
    procs: int = 1,
    parent: str = "",
    name: str = "NVIDIA A100-SXM4-80GB",
    errors: tuple[str, ...] = (),
) -> GpuWindow:
    return GpuWindow(
        uuid=f"GPU-{node}-{i}" if not parent else f"MIG-{node}-{i}",
        index=i,
        name=name,
        parent_uuid=parent,
        samples=0 if util is None else 60,
        util_mean=None if util is None else util * 0.8,
        util_max=util,
        mem_used_max_bytes=None if util is None else int((10 + util / 2) * GIB),
        mem_total_bytes=80 * GIB,
        power_mean_w=None if util is None else 60 + 3 * util,
        processes=tuple(ProcessInfo(pid=4000 + 10 * i + k, name="python") for k in range(procs)),
        job=job_,
        allocated=job_ is not None,
        errors=errors,
    )


def node_gpus(node: str, t: int) -> tuple[GpuWindow, ...]:
    """The node's GPUs in window ``t`` (0 = oldest); the newest window has fixed values."""
    wave = 0.0 if t == HISTORY_WINDOWS - 1 else 20 * abs(math.sin(t / 3))
    if node == "gpu01":
        return (
            gpu(node, 0, 95.0 - wave, ALICE),
            gpu(node, 1, 80.0 - wave / 2, ALICE),
            gpu(node, 2, 0.0, BOB),
            gpu(node, 3, 0.0, None, procs=0),
        )
    if node == "gpu02":
        return (
            gpu(node, 0, 0.0, CAROL, procs=0),
            gpu(node, 1, 0.0, CAROL, procs=0),
            gpu(node, 2, 40.0, DAVE),
            gpu(node, 3, None, None, procs=0, errors=("gpu_lost",)),
        )
    parent = "GPU-gpu03-0"
    return (
        gpu(node, 0, 55.0, None, procs=0),
        gpu(node, 1, 60.0, ERIN, parent=parent, name="MIG 3g.40gb"),
        gpu(node, 2, 0.0, FRANK, parent=parent, name="MIG 2g.20gb"),
        gpu(node, 3, 0.0, None, procs=0, parent=parent, name="MIG 1g.10gb"),
        gpu(node, 4, 100.0, BOB2),
    )


def fixed_time(hour: int, minute: int = 0) -> float:
    """Today at hour:minute, local time (the feed shows clock times)."""
    today = dt.datetime.now().replace(hour=hour, minute=minute, second=0, microsecond=0)
    return today.timestamp()


def record(
    job_id: str,
    ts: float,
    kind: str,
    action: str,
    outcome: str,
    detail: str,
    gpus: tuple[str, ...],
    since: float | None = None,
) -> AuditRecord:
    evidence: dict[str, Any] = {"policy": {"enforce": False}}
    if since is not None:
        evidence["finding"] = {"kind": kind, "code": "", "since_ts": since}
    return AuditRecord(
        ts=ts,
        job_id=job_id,
        kind=kind,
        action=action,
        outcome=outcome,
        dry_run=outcome == "dry_run",
        gpus=gpus,
        detail=detail,
        evidence=evidence,
        actor="gpuwarden-collector",
    )


async def fill(c: Collector) -> None:
    now = time.time()
    for node in ("gpu01", "gpu02", "gpu03"):
        for t in range(HISTORY_WINDOWS):
            end = now - 60 * (HISTORY_WINDOWS - 1 - t)
            await c.ingestor.submit(NodeReport(node, t + 1, end - 60, end, node_gpus(node, t)))
    log = AuditLog(conn=connect(c.store.path))
    carol = ("GPU-gpu02-0", "GPU-gpu02-1")
    nine = fixed_time(9)
    log.append(
        record(
            "7003",
            nine,
            "idle",
            "warn",
            "warned",
            "idle for 30 min, warning 1 of 2",
            carol,
            since=nine - 3600,
        )
    )
    log.append(
        record(
            "7003",
            nine + 60,
            "idle",
            "requeue",
            "dry_run",
            "dry run: would requeue",
            carol,
            since=nine - 3600,
        )
    )
    log.append(
        record(
            "7002",
            nine + 120,
            "advice",
            "none",
            "reported",
            "memory held while idle: GPU 2 holds 10 GiB at 0 % utilisation",
            ("GPU-gpu01-2",),
        )
    )
    log.close()
    c.audit = AuditQuery(c.store.path)
    attach_admin(c, policies=PolicySet(default=Policy(enforce=False)), executor=None)


class ThreadedCollector:
    """A collector serving from its own thread and event loop."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.collector: Collector | None = None
        self.port = 0

    def call(self, factory: Callable[[], Awaitable[T]]) -> T:
        async def run() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(60)

    def start(
        self, port: int = 0, filled: bool = True, tls: tuple[bytes, bytes, bytes] | None = None
    ) -> None:
        async def go() -> None:
            c = Collector(db_path=self.db, listen=f"127.0.0.1:{port}", tls=tls)
            await c.start()
            if filled:
                await fill(c)
            else:
                c.audit = AuditQuery(c.store.path)
                attach_admin(
                    c,
                    policies=PolicySet(default=Policy(enforce=False)),
                    executor=None,
                )
            self.collector = c
            self.port = c.port

        self.call(go)

    def stop(self) -> None:
        if self.collector is not None:
            c = self.collector
            self.collector = None
            self.call(c.stop)

    def audit(self, job_id: str = "") -> list[AuditRecord]:
        assert self.collector is not None and self.collector.audit is not None
        return self.collector.audit.query(job_id, 0.0, 1000)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ThreadedCollector]:
    tc = ThreadedCollector(tmp_path / "collector.db")
    tc.start()
    try:
        yield tc
    finally:
        tc.close()


def make_app(port: int, role: str | None = "admin", **tls: str) -> TopApp:
    """The dashboard on a plaintext collector, or with ``tls_ca``, ``tls_cert``, ``tls_key``;
    ``role`` None: as the collector's Whoami says."""
    cfg = ClientConfig(
        collector=f"127.0.0.1:{port}",
        insecure=not tls,
        timeout=5.0,
        **tls,  # type: ignore[arg-type]
    )
    return TopApp(cfg, role=role, min_render_s=0.0)
