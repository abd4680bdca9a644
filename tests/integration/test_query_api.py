"""The query API as the dashboard will use it: watch stream, health, history bounds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gpuwarden.collector.server import Collector
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import AuditRecord, GpuWindow, NodeReport, NodeState
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc
from gpuwarden.query import QueryClient


def report(node: str, seq: int, util: float) -> pb.NodeReport:
    return report_to_pb(
        NodeReport(
            node=node,
            seq=seq,
            window_start=1_700_000_000 + 5 * seq,
            window_end=1_700_000_005 + 5 * seq,
            gpus=(GpuWindow(uuid=f"GPU-{node}", index=0, samples=5, util_max=util),),
        )
    )


async def send(port: int, reports: list[pb.NodeReport]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = pb_grpc.AgentServiceStub(ch).Report()
        for r in reports:
            await call.write(r)
            await call.read()
        await call.done_writing()


async def test_watch_sends_the_snapshot_then_every_change(collector: Collector) -> None:
    await send(collector.port, [report("a", 1, 10.0)])
    async with QueryClient(f"127.0.0.1:{collector.port}") as client:
        events: asyncio.Queue[NodeState | AuditRecord] = asyncio.Queue()

        async def watch() -> None:
            async for ev in client.watch(include_snapshot=True):
                await events.put(ev)

        task = asyncio.create_task(watch())
        first = await asyncio.wait_for(events.get(), 10)
        assert isinstance(first, NodeState)
        assert first.node == "a" and first.gpus[0].latest.util_max == 10.0
        await send(collector.port, [report("b", 1, 20.0), report("b", 2, 30.0)])
        seen: dict[str, float] = {}
        while seen.get("b") != 30.0:
            ev = await asyncio.wait_for(events.get(), 10)
            if isinstance(ev, NodeState) and ev.gpus and ev.gpus[0].latest.util_max is not None:
                seen[ev.node] = ev.gpus[0].latest.util_max
        # an audit record published by the enforcement side reaches watchers too
        published = AuditRecord(
            ts=1_700_000_100,
            job_id="42",
            kind="idle",
            action="warn",
            outcome="dry_run",
            dry_run=True,
            gpus=("GPU-a",),
            detail="idle for 30m",
            evidence={"finding": {"kind": "idle"}},
        )
        collector.state.publish(published)
        while True:
            ev = await asyncio.wait_for(events.get(), 10)
            if isinstance(ev, AuditRecord):
                break
        assert ev == published  # the domain record, converted at both edges, arrives whole
        task.cancel()


async def test_slow_watcher_collapses_bursts_to_the_newest_state(collector: Collector) -> None:
    watcher = collector.state.subscribe()
    await send(collector.port, [report("a", s, float(s)) for s in range(1, 21)])
    events = await asyncio.wait_for(watcher.get(), 5)
    assert events is not None
    utils = [e.gpus[0].latest.util_max for e in events if isinstance(e, NodeState)]
    assert utils[-1] == 20.0 and len(utils) < 20  # the burst collapsed
    collector.state.unsubscribe(watcher)


async def test_health_is_serving_and_history_needs_a_filter(tmp_path: Path) -> None:
    c = Collector(db_path=tmp_path / "db", listen="127.0.0.1:0")
    await c.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{c.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "gpuwarden.v1.AgentService", "gpuwarden.v1.QueryService"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        query = pb_grpc.QueryServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await query.GetHistory(pb.HistoryRequest())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "give at least one of node, uuid, job_id" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await query.GetHistory(pb.HistoryRequest(node="a", limit=10**6))
        assert "above the maximum" in (err.value.details() or "")
    await c.stop()
