#!/usr/bin/env python3
"""What authorization costs per query call: a reader (mTLS certificate) against a researcher
(a fresh MUNGE credential per call: ``munge`` on the client, ``unmunge`` on the collector).

Starts an in-process collector with TLS and a MUNGE port (needs a running munged), makes
--calls sequential Whoami calls each way and prints calls/s and the median latency.

    .venv/bin/python bench/authz_calls.py --calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuwarden.collector.munge import MungeVerifier
from gpuwarden.collector.server import Collector
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc
from gpuwarden.query.munge import munge_metadata
from tests.pki import TestCA, server_tls


async def timed(n: int, call: object) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()  # type: ignore[operator]
        out.append(time.perf_counter() - t)
    return out


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ca = TestCA(Path(tmp) / "pki")
        reader = ca.issue("reader", role="reader")
        c = Collector(
            db_path=Path(tmp) / "db",
            tls=server_tls(ca),
            munge=MungeVerifier(),
            munge_listen="127.0.0.1:0",
        )
        await c.start()
        try:
            root = ca.ca.read_bytes()
            mtls = grpc.ssl_channel_credentials(
                root, reader.key.read_bytes(), reader.cert.read_bytes()
            )
            async with (
                grpc.aio.secure_channel(f"127.0.0.1:{c.port}", mtls) as a,
                grpc.aio.secure_channel(
                    f"127.0.0.1:{c.munge_port}", grpc.ssl_channel_credentials(root)
                ) as b,
            ):
                sa, sb = pb_grpc.QueryServiceStub(a), pb_grpc.QueryServiceStub(b)

                async def as_reader() -> None:
                    await sa.Whoami(pb.WhoamiRequest())

                async def as_researcher() -> None:
                    await sb.Whoami(pb.WhoamiRequest(), metadata=await munge_metadata())

                for name, fn in (
                    ("reader (mTLS)", as_reader),
                    ("researcher (MUNGE)", as_researcher),
                ):
                    await timed(5, fn)  # warm up
                    lat = await timed(calls, fn)
                    print(
                        f"{name:20s} {calls / sum(lat):8.0f} calls/s  "
                        f"median {statistics.median(lat) * 1e3:6.2f} ms  "
                        f"p95 {sorted(lat)[int(0.95 * len(lat))] * 1e3:6.2f} ms"
                    )
        finally:
            await c.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200)
    asyncio.run(main(p.parse_args().calls))
