#!/usr/bin/env python3
"""Collector ingest throughput: many agent streams -> validation -> group commit -> acks.

Starts an in-process collector (SQLite in a temp dir, synchronous=FULL) and N concurrent
agent streams on loopback, each sending --reports reports of --gpus GPUs as fast as acks
allow (up to --in-flight unacked). Prints reports/s and GPU windows/s, end to end (acked =
durably stored).

    .venv/bin/python bench/ingest_throughput.py --nodes 64 --reports 200 --gpus 8
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import grpc

from gpuwarden.collector.server import Collector
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, ProcessInfo
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc


def make_report(node: str, seq: int, gpus: int, t0: float) -> NodeReport:
    return NodeReport(
        node=node,
        seq=seq,
        window_start=t0 + 5 * seq,
        window_end=t0 + 5 * seq + 5,
        gpus=tuple(
            GpuWindow(
                uuid=f"GPU-{node}-{i}",
                index=i,
                samples=5,
                util_mean=50.0,
                util_max=90.0,
                util_min=10.0,
                zero_frac=0.0,
                mem_used_max_bytes=30 << 30,
                mem_total_bytes=80 << 30,
                power_mean_w=300.0,
                temperature_c=60.0,
                processes=(ProcessInfo(1000 + i, 30 << 30, "python"),),
                job=JobInfo(job_id=str(100000 + i), user="alice", partition="gpu"),
                allocated=True,
            )
            for i in range(gpus)
        ),
    )


async def one_agent(target: str, node: str, n: int, gpus: int, in_flight: int) -> None:
    t0 = time.time() - 5 * n - 60
    msgs = [report_to_pb(make_report(node, s, gpus, t0)) for s in range(1, n + 1)]
    async with grpc.aio.insecure_channel(target) as ch:
        call = pb_grpc.AgentServiceStub(ch).Report()
        window = asyncio.Semaphore(in_flight)
        acked = 0

        async def reader() -> None:
            nonlocal acked
            async for _ack in call:
                acked += 1
                window.release()
                if acked == n:
                    return

        r = asyncio.create_task(reader())
        for m in msgs:
            await window.acquire()
            await call.write(m)
        await r
        await call.done_writing()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--reports", type=int, default=200, help="reports per node")
    ap.add_argument("--gpus", type=int, default=8, help="GPUs per report")
    ap.add_argument("--in-flight", type=int, default=32)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = Collector(db_path=Path(tmp) / "bench.db", listen="127.0.0.1:0")
        await c.start()
        target = f"127.0.0.1:{c.port}"
        start = time.perf_counter()
        await asyncio.gather(
            *(
                one_agent(target, f"n{i:04d}", args.reports, args.gpus, args.in_flight)
                for i in range(args.nodes)
            )
        )
        elapsed = time.perf_counter() - start
        total = args.nodes * args.reports
        stored = c.store.count_reports()
        await c.stop()
    print(
        f"ingest: {args.nodes} streams x {args.reports} reports x {args.gpus} GPUs: "
        f"{total} reports in {elapsed:.2f} s = {total / elapsed:,.0f} reports/s, "
        f"{total * args.gpus / elapsed:,.0f} GPU windows/s (stored {stored})"
    )
    print(
        f"at report_interval 5 s that is ~{total / elapsed * 5:,.0f} nodes per collector "
        "(client and server on the same 2 cores)"
    )


if __name__ == "__main__":
    asyncio.run(main())
