"""A node taken out of service leaves the collector's live state once it has been silent
past the raw retention (the housekeeping round forgets it), and only then."""

from __future__ import annotations

import grpc

from gpuwarden.collector.server import Collector
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, NodeReport
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc
from tests.helpers import wait_for

T = 1_700_000_000.0


async def send_one(c: Collector, node: str, end: float) -> None:
    report = NodeReport(
        node=node,
        seq=1,
        window_start=end - 5,
        window_end=end,
        gpus=(GpuWindow(uuid=f"GPU-{node}", index=0, samples=5),),
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{c.port}") as ch:
        call = pb_grpc.AgentServiceStub(ch).Report()
        await call.write(report_to_pb(report))
        assert (await call.read()).seq == 1
        await call.done_writing()


async def test_a_node_silent_past_the_retention_leaves_the_snapshot(collector: Collector) -> None:
    await send_one(collector, "retired", T)
    await send_one(collector, "recent", T + 3600)
    await wait_for(lambda: not any(n.connected for n in collector.snapshot().nodes))
    assert "retired" in collector.node_addresses
    collector.forget_silent_nodes(T + 60)  # what housekeeping does, with now - retention
    assert [n.node for n in collector.snapshot().nodes] == ["recent"]
    assert "retired" not in collector.node_addresses
    assert collector.store.count_reports() == 2  # its history stays the store's
