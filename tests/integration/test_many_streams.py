"""Thousands of agent streams opened at once are all served.

gRPC's core holds a new call until the server's Python loop asks for it, and by default drops
calls beyond 1,000 held (more and more of them up to 3,000): those agents saw their stream
end CANCELLED or INTERNAL before anything was sent, as after a collector restart when every
agent reconnects at once. Here the collector's event loop is kept busy while another process
opens 1,500 streams, so that they all wait in the core; every one must then be acked.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from gpuwarden.collector.server import Collector

pytestmark = pytest.mark.timeout(120)

STREAMS = 1500

CLIENT = """
import asyncio, sys
import grpc
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc

async def one(stub, i):
    call = stub.Report()
    try:
        await call.write(pb.NodeReport(node=f"n{i:05d}", seq=1, window_start=1.7e9,
                                       window_end=1.7e9 + 5))
        ack = await call.read()
        await call.done_writing()
        return "acked" if ack is not grpc.aio.EOF and ack.seq == 1 else "no ack"
    except grpc.aio.AioRpcError:
        return (await call.code()).name

async def main(target, n):
    async with grpc.aio.insecure_channel(target) as ch:
        await ch.channel_ready()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        stub = pb_grpc.AgentServiceStub(ch)
        outcomes = await asyncio.gather(*(one(stub, i) for i in range(n)))
        print({o: outcomes.count(o) for o in set(outcomes)}, flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_streams_opened_at_once_beyond_a_thousand_are_all_acked(tmp_path: Path) -> None:
    c = Collector(db_path=tmp_path / "db", listen="127.0.0.1:0")
    await c.start()
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        f"127.0.0.1:{c.port}",
        str(STREAMS),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert client.stdin is not None and client.stdout is not None
        assert (await client.stdout.readline()).startswith(b"ready")
        client.stdin.write(b"go\n")
        await client.stdin.drain()
        # The collector's loop is busy (as with a rule pass or a burst of reports) while
        # the streams arrive: the core holds them until the loop asks for them.
        time.sleep(3.0)  # noqa: ASYNC251 (blocking the loop is the point)
        line = (await client.stdout.readline()).decode()
    finally:
        if client.returncode is None:
            client.kill()
        await client.wait()
        await c.stop()
    assert line.strip() == str({"acked": STREAMS}), line
