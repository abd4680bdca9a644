"""A flooding node is slowed down to its rate; every report still arrives, others are served."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc

from gpuwarden.collector.ratelimit import RateLimiter
from gpuwarden.collector.server import Collector
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, NodeReport
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc


def _report(node: str, seq: int) -> NodeReport:
    t = 1_700_000_000 + 5 * seq
    g = GpuWindow(uuid=f"GPU-{node}", index=0, samples=5, util_max=50.0, util_mean=40.0)
    return NodeReport(node=node, seq=seq, window_start=t - 5, window_end=t, gpus=(g,))


async def _send(port: int, node: str, count: int) -> list[int]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = pb_grpc.AgentServiceStub(ch).Report()
        for seq in range(1, count + 1):
            await call.write(report_to_pb(_report(node, seq)))
        acked = [(await call.read()).seq for _ in range(count)]
        await call.done_writing()
    return acked


async def test_a_flood_is_throttled_and_nothing_is_lost(tmp_path: Path) -> None:
    collector = Collector(
        db_path=tmp_path / "db",
        listen="127.0.0.1:0",
        rate_limiter=RateLimiter(rate_per_s=40, burst=5),
    )
    await collector.start()
    try:
        flood, honest = await asyncio.gather(
            _send(collector.port, "flood", 40), _send(collector.port, "honest", 3)
        )
    finally:
        await collector.stop()
    assert flood == list(range(1, 41)) and honest == [1, 2, 3]
    assert collector.rate_limiter.throttled >= 30  # only the burst went through unslowed
    with sqlite3.connect(tmp_path / "db") as db:
        rows = dict(db.execute("SELECT node, count(*) FROM reports GROUP BY node").fetchall())
    assert rows == {"flood": 40, "honest": 3}
