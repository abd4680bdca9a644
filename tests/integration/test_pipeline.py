"""Agent (NvmlSampler over the fake libnvidia-ml) -> gRPC -> collector -> SQLite -> query API."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import sqlite3
from pathlib import Path

import grpc
import pytest

from gpuwarden.agent.spool import Spool, spooled_seqs
from gpuwarden.collector import layout_read
from gpuwarden.collector.server import Collector
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, NodeReport
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc
from gpuwarden.query import QueryClient
from tests.fakenvml import GIB, FakeNvmlState, default_gpu_uuid
from tests.helpers import (
    Proc,
    agent_args,
    free_port,
    running_agent,
    streaming,
    wait_for,
    wait_for_sync,
)

GPU0, GPU1, GPU2, GPU3 = (default_gpu_uuid(i) for i in range(4))


async def latest(client: QueryClient, node: str, uuid: str) -> GpuWindow | None:
    snap = await client.snapshot()
    for n in snap.nodes:
        if n.node == node:
            for g in n.gpus:
                if g.latest.uuid == uuid:
                    return g.latest
    return None


async def test_gpu_going_from_busy_to_idle_is_stored_and_queryable(
    collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    fake_nvml.set(GPU0, util_gpu=90, mem_used_bytes=30 * GIB)
    async with (
        running_agent(collector, tmp_path / "spool"),
        QueryClient(f"127.0.0.1:{collector.port}") as client,
    ):
        state: dict[str, GpuWindow | None] = {}

        async def seen(pred: object) -> None:
            async def check() -> bool:
                state["w"] = await latest(client, "n1", GPU0)
                return bool(state["w"] is not None and pred(state["w"]))  # type: ignore[operator]

            for _ in range(200):
                if await check():
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"never saw the expected window; last: {state.get('w')}")

        await seen(lambda w: w.util_max == 90)
        fake_nvml.set(GPU0, util_gpu=0)
        await seen(lambda w: w.util_max == 0 and w.util_mean == 0)
        history = await client.history(uuid=GPU0)
    utils = [w.gpu.util_max for w in history.windows]
    assert utils[0] == 90 and utils[-1] == 0
    first_zero = utils.index(0)
    assert all(u == 0 for u in utils[first_zero:]), utils  # busy, (one mixed window), idle
    # The same windows are in the SQLite file, with the memory the GPU held.
    with contextlib.closing(sqlite3.connect(collector.store.path)) as db:
        rows = [
            (g.util_max, g.mem_used_max_bytes)
            for *_, windows in layout_read.stored_reports(db, layout_read.RawQuery(uuid=GPU0))
            for g, _ in windows
        ]
    # (the agent flushes one more window when it stops, after the history query)
    assert [r[0] for r in rows][: len(utils)] == utils
    assert rows[-1][1] == 30 * GIB


async def test_process_appearing_and_leaving_is_reported(
    collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    pid = os.getpid()
    async with (
        running_agent(collector, tmp_path / "spool"),
        QueryClient(f"127.0.0.1:{collector.port}") as client,
    ):
        await wait_for(lambda: collector.state.node("n1") is not None)
        fake_nvml.add_process(GPU1, pid, 2 * GIB)

        async def procs() -> list[tuple[int, int, str]]:
            w = await latest(client, "n1", GPU1)
            return [] if w is None else [(p.pid, p.used_mem_bytes, p.name) for p in w.processes]

        for _ in range(200):
            if await procs():
                break
            await asyncio.sleep(0.05)
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        assert await procs() == [(pid, 2 * GIB, comm)]
        fake_nvml.remove_process(GPU1, pid)
        for _ in range(200):
            if not await procs():
                break
            await asyncio.sleep(0.05)
        assert await procs() == []


async def test_lost_gpu_is_reported_while_the_others_keep_reporting(
    collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    for uuid in (GPU0, GPU1, GPU3):
        fake_nvml.set(uuid, util_gpu=55)
    async with running_agent(collector, tmp_path / "spool"):
        await wait_for(lambda: collector.state.node("n1") is not None)
        fake_nvml.lose(GPU2)
        seq_at_loss = collector.state.node("n1").last_seq  # type: ignore[union-attr]
        await wait_for(
            lambda: collector.state.node("n1").last_seq >= seq_at_loss + 3  # type: ignore[union-attr]
        )
    records, _ = collector.store.history(node="n1", since=0)
    last_seq_windows = [r for r in records if r.window_end == records[-1].window_end]
    by_uuid = {r.gpu.uuid: r.gpu for r in last_seq_windows}
    assert set(by_uuid) == {GPU0, GPU1, GPU2, GPU3}
    assert "gpu_lost" in by_uuid[GPU2].errors
    assert by_uuid[GPU2].util_max is None and by_uuid[GPU2].samples == 0
    for uuid in (GPU0, GPU1, GPU3):
        assert by_uuid[uuid].util_max == 55 and not by_uuid[uuid].errors


def _report(seq: int, util: float) -> NodeReport:
    return NodeReport(
        node="n9",
        seq=seq,
        window_start=1_700_000_000,
        window_end=1_700_000_005,
        gpus=(GpuWindow(uuid="GPU-x", index=0, samples=5, util_max=util, util_mean=util),),
    )


async def test_invalid_report_is_refused_with_a_clear_status_and_changes_nothing(
    collector: Collector,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{collector.port}") as ch:
        call = pb_grpc.AgentServiceStub(ch).Report()
        await call.write(report_to_pb(_report(1, 50.0)))
        ack = await call.read()
        assert ack.seq == 1 and not ack.duplicate
        await call.write(report_to_pb(_report(2, math.nan)))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gpus[0].util_mean=nan is not a finite number" in (err.value.details() or "")
    assert ("gpuwarden-rejected-seq", "2") in tuple(err.value.trailing_metadata() or ())
    records, _ = collector.store.history(node="n9")
    assert [r.gpu.util_max for r in records] == [50.0]
    assert collector.store.count_reports() == 1


async def test_agent_sets_aside_a_rejected_report_and_keeps_streaming(
    collector: Collector, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    good_before = spool.next_seq()
    bad = spool.next_seq()
    spool.put(good_before, report_to_pb(_report(good_before, 10.0)).SerializeToString())
    spool.put(bad, report_to_pb(_report(bad, 150.0)).SerializeToString())
    good_after = spool.next_seq()
    spool.put(good_after, report_to_pb(_report(good_after, 20.0)).SerializeToString())
    from gpuwarden.agent.client import ReportStreamer

    streamer = ReportStreamer(f"127.0.0.1:{collector.port}", spool, backoff_initial_s=0.05)
    async with streaming(streamer):
        await wait_for(lambda: len(spool) == 0)
    assert streamer.rejected == 1
    assert (spool.directory / "rejected" / f"{bad:020d}.pb").exists()
    records, _ = collector.store.history(node="n9")
    assert sorted(r.gpu.util_max or 0 for r in records) == [10.0, 20.0]


def test_collector_killed_and_restarted_mid_run_stores_every_window_exactly_once(
    fake_nvml: FakeNvmlState, tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    state_dir = tmp_path / "collector"
    collector_args = ["collector", "--insecure", "--listen", f"127.0.0.1:{port}"]
    collector_args += ["--state-dir", str(state_dir)]
    fake_nvml.set(GPU0, util_gpu=80)

    def start_collector(log: str) -> Proc:
        p = Proc(collector_args, tmp_path / log)
        procs.append(p)
        wait_for_sync(lambda: "listening" in p.output(), 30)
        return p

    db_path = state_dir / "gpuwarden.db"

    def stored_reports() -> int:
        if not db_path.exists():
            return 0
        with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as db:
            return int(db.execute("SELECT count(*) FROM reports").fetchone()[0])

    c1 = start_collector("collector1.log")
    agent = Proc(
        ["-v", *agent_args(port, tmp_path / "spool", sample_s=0.05, report_s=0.2)],
        tmp_path / "agent.log",
        env=fake_nvml.env(),
    )
    procs.append(agent)
    wait_for_sync(lambda: stored_reports() >= 10, 30)
    c1.kill()  # SIGKILL: no shutdown, no flush
    stored_before_kill = stored_reports()
    spool_files = lambda: len(spooled_seqs(tmp_path / "spool"))  # noqa: E731
    wait_for_sync(lambda: spool_files() >= 8, 30)  # the agent keeps sampling into its spool
    spooled_while_down = spool_files()
    start_collector("collector2.log")
    wait_for_sync(lambda: spool_files() <= 1, 30)  # replayed after reconnect
    wait_for_sync(lambda: stored_reports() >= stored_before_kill + spooled_while_down + 5, 30)
    assert agent.terminate() == 0, agent.output()
    out = agent.output()
    m = re.search(r"agent stopped: AgentStats\(samples=\d+, sample_errors=\d+, reports=(\d+)", out)
    assert m, out
    produced = int(m.group(1))
    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as db:
        n_reports, lo, hi = db.execute(
            "SELECT count(*), min(seq), max(seq) FROM reports"
        ).fetchone()
        seqs = dict(db.execute("SELECT id, seq FROM reports").fetchall())
        keys = [
            (node, seqs[rid], g.uuid)
            for rid, node, *_, windows in layout_read.stored_reports(db)
            for g, _ in windows
        ]
        n_windows, n_distinct = len(keys), len(set(keys))
    print(
        f"restart test: reports produced {produced}, stored {n_reports} "
        f"(seq {lo}..{hi}), windows {n_windows} ({n_distinct} distinct), "
        f"stored before kill {stored_before_kill}, spooled while down {spooled_while_down}"
    )
    assert n_reports == produced
    assert hi - lo + 1 == produced  # no gap in the sequence
    assert n_windows == n_distinct == 4 * produced


async def test_bytes_that_are_no_report_get_invalid_argument_not_unknown(
    collector: Collector,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{collector.port}") as ch:
        call = ch.stream_stream(
            "/gpuwarden.v1.AgentService/Report",
            request_serializer=lambda b: b,
            response_deserializer=pb.Ack.FromString,
        )()
        await call.write(b"\x0a\x05\xff\xfe\xfd\xfc\xfb")  # field 1 (node): bad UTF-8
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a gpuwarden.v1.NodeReport" in (err.value.details() or "")
    assert collector.undecodable == 1
