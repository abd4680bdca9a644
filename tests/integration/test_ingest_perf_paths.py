"""The fast ingest paths keep their promises: windows stored as received read back the same
(and a sender's unknown fields are not kept), and reports arriving a moment apart share one
transaction (one fsync)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from pathlib import Path

import grpc

from gpuwarden.collector.config import load_collector_config
from gpuwarden.collector.ingest import Ingestor
from gpuwarden.collector.layout import unpack
from gpuwarden.collector.main import build_collector
from gpuwarden.collector.server import Collector
from gpuwarden.collector.state import ClusterState
from gpuwarden.collector.store import Store
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, ProcessInfo
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc
from tests.helpers import varint

T = 1_700_000_000.0


def _window(i: int) -> GpuWindow:
    return GpuWindow(
        uuid=f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd",
        index=i,
        name="NVIDIA A100",
        samples=5,
        util_mean=41.5,
        util_max=90.0,
        mem_used_max_bytes=3 << 30,
        mem_total_bytes=80 << 30,
        processes=(ProcessInfo(4242, 3 << 30, "python"),),
        job=JobInfo(job_id="777", user="alice", partition="gpu"),
        allocated=True,
        extra_mean={"sm_active": 0.5},
    )


def _report(node: str, seq: int, gpus: int = 1) -> NodeReport:
    return NodeReport(
        node=node,
        seq=seq,
        window_start=T + 5 * seq - 5,
        window_end=T + 5 * seq,
        gpus=tuple(_window(i) for i in range(gpus)),
    )


async def test_windows_stored_as_received_read_back_equal_without_unknown_fields(
    tmp_path: Path,
) -> None:
    sent = _report("n1", 1, gpus=2)
    # Field 999 is no field of GpuWindow: a future agent's (or a hostile one's) extra bytes.
    unknown = b"\xba\x3e" + bytes([0x80, 0x50]) + b"x" * 10240  # tag 999/LEN, 10,240 bytes
    wire = bytearray()
    for g in report_to_pb(sent).gpus:
        body = g.SerializeToString() + unknown
        wire += b"\x32" + varint(len(body)) + body  # NodeReport.gpus is field 6
    msg = report_to_pb(sent)
    del msg.gpus[:]
    msg.MergeFromString(bytes(wire))
    assert len(msg.gpus) == 2
    c = Collector(db_path=tmp_path / "db", listen="127.0.0.1:0")
    await c.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{c.port}") as ch:
            call = pb_grpc.AgentServiceStub(ch).Report()
            await call.write(msg)
            ack = await call.read()
            await call.done_writing()
        assert ack.seq == 1 and not ack.duplicate
        records, truncated = c.store.history(node="n1", resolution=0)
    finally:
        await c.stop()
    assert not truncated
    assert [r.gpu for r in records] == list(sent.gpus)
    with sqlite3.connect(tmp_path / "db") as db:
        sizes = [len(w) for (d,) in db.execute("SELECT data FROM reports") for *_, w in unpack(d)]
    assert len(sizes) == 2 and max(sizes) < 1024  # the 10 KiB of unknown bytes were dropped


class _CountingStore(Store):
    """A real store that also notes when each transaction began."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.starts: list[float] = []

    def write_reports(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.starts.append(time.monotonic())
        return super().write_reports(*args, **kwargs)


async def _trickle(ingestor: Ingestor, count: int, every_s: float) -> list[bool]:
    """``count`` reports from different nodes, one every ``every_s``: agents sending now and
    then."""
    futures = []
    for k in range(count):
        futures.append(ingestor.submit(_report(f"n{k}", 1)))
        await asyncio.sleep(every_s)
    return list(await asyncio.gather(*futures))


async def test_transactions_start_a_commit_window_apart(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    ingestor = Ingestor(store, ClusterState(), commit_window_s=0.05)
    ingestor.start()
    try:
        assert await _trickle(ingestor, 30, 0.005) == [True] * 30
    finally:
        await ingestor.stop()
    assert store.count_reports() == 30
    store.close()
    # Every report of a transaction is stamped with the instant the ingestor began it: the
    # stamps say how many transactions there were and how far apart they began. (When the
    # worker thread then gets to run is the OS's: under load the first one, which also
    # starts the thread, began up to 18 ms late, and the gap after it looked short.)
    with sqlite3.connect(tmp_path / "db") as db:
        began = [t for (t,) in db.execute("SELECT DISTINCT received FROM reports ORDER BY 1")]
    gaps = [b - a for a, b in itertools.pairwise(began)]
    # Shared fsyncs, never much closer.
    assert len(began) < 30 and min(gaps) >= 0.04, began


async def test_one_agent_alone_is_not_held_back_by_the_commit_window(tmp_path: Path) -> None:
    """A node replaying its spool with nobody else reporting: each report waits for the one
    before it to be acked, so a commit window would only slow it down (5 reports, 4 s)."""
    store = _CountingStore(tmp_path / "db")
    ingestor = Ingestor(store, ClusterState(), commit_window_s=1.0)
    ingestor.start()
    try:
        for seq in range(1, 6):
            assert await ingestor.submit(_report("n1", seq)) is True
        await ingestor.submit(_report("n2", 1))  # another node now: the next one waits
        started = time.monotonic()
        assert await ingestor.submit(_report("n1", 6)) is True
        held_s = time.monotonic() - started
    finally:
        await ingestor.stop()
    assert len(store.starts) == 7
    assert store.starts[4] - store.starts[0] < 2.0  # not 4 windows of 1 s
    assert held_s >= 0.9  # sharing again once another node reports


async def test_without_a_commit_window_a_trickle_is_written_report_by_report(
    tmp_path: Path,
) -> None:
    store = _CountingStore(tmp_path / "db")
    ingestor = Ingestor(store, ClusterState(), commit_window_s=0)
    ingestor.start()
    try:
        await _trickle(ingestor, 10, 0.05)  # each report alone: the baseline the window improves
    finally:
        await ingestor.stop()
    assert len(store.starts) >= 8  # (two may share one on a machine too busy to keep up)
    store.close()


async def test_the_daemons_transactions_start_its_configured_commit_window_apart(
    tmp_path: Path,
) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(
        f'[collector]\ninsecure = true\nstate_dir = "{tmp_path}"\ncommit_window = "0.2s"\n'
    )
    c = build_collector(load_collector_config(config, environ={}))
    starts: list[float] = []
    write_reports = c.store.write_reports

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        starts.append(time.monotonic())
        return write_reports(*args, **kwargs)

    c.store.write_reports = counting  # type: ignore[method-assign]
    await c.start()
    try:
        assert await _trickle(c.ingestor, 12, 0.05) == [True] * 12
    finally:
        await c.stop()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) <= 5 and min(gaps) >= 0.18  # 12 reports over 0.6 s: 4 transactions
