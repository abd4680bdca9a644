"""A whole site's agents reconnecting at once (after a collector restart) all get their
streams: none is cancelled by gRPC because the collector had not yet taken it up.

gRPC holds calls that have arrived but that the server has not yet taken up in a queue;
past ``grpc.server.max_pending_requests`` (1,000 by default) it cancels a growing share of
new ones at random, and past the hard limit (3,000) every one. The collector takes up one
call per turn of its event loop, so a burst of streams while the loop is busy piles up
there."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

import grpc

from gpuwarden.collector.server import Collector
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc

STREAMS = 3_500  # past gRPC's default hard limit: without the collector's setting, many fail
BUSY_S = 3.0


def open_streams(target: str, n: int, opened: threading.Event) -> Counter[str]:
    """In a thread with its own event loop: ``n`` report streams on one connection, opened
    at once; each then ends its side. Returns how the streams ended."""

    async def main() -> Counter[str]:
        async with grpc.aio.insecure_channel(target) as ch:
            stub = pb_grpc.AgentServiceStub(ch)
            await ch.channel_ready()
            calls = [stub.Report() for _ in range(n)]
            opened.set()

            async def finish(call: grpc.aio.StreamStreamCall) -> str:  # type: ignore[type-arg]
                try:
                    await call.done_writing()
                    async for _ in call:
                        pass
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    pass
                return str((await call.code()).name)

            return Counter(await asyncio.gather(*(finish(c) for c in calls)))

    return asyncio.run(main())


async def test_3500_streams_opened_while_the_collector_is_busy_are_all_taken_up(
    tmp_path: Path,
) -> None:
    collector = Collector(db_path=tmp_path / "c.db")
    await collector.start()
    try:
        opened = threading.Event()
        ended: Counter[str] = Counter()

        def client() -> None:
            ended.update(open_streams(f"127.0.0.1:{collector.port}", STREAMS, opened))

        thread = threading.Thread(target=client)
        thread.start()
        # The collector's event loop is busy (as when thousands of agents reconnect): no
        # call is taken up meanwhile, all of them wait in gRPC's queue.
        assert await asyncio.to_thread(opened.wait, 60.0)
        time.sleep(BUSY_S)  # noqa: ASYNC251 (the point: the loop is blocked)
        await asyncio.to_thread(thread.join, 120.0)
        assert not thread.is_alive()
        assert ended == Counter({"OK": STREAMS})
    finally:
        await collector.stop()
