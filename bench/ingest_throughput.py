#!/usr/bin/env python3
"""Collector ingest throughput: many agent streams -> validation -> group commit -> acks.

Starts an in-process collector (SQLite in a temp dir, WAL, synchronous=FULL) and N agent
streams on loopback, each on its own TCP connection (``grpc.use_local_subchannel_pool``, as
N real nodes would be), each sending ``--reports`` reports of ``--gpus`` GPUs as fast as
acks allow (up to ``--in-flight`` unacked). Prints GPU windows/s end to end (acked =
durably stored) beside the same-run floor: raw SQLite inserting the rows the store writes
(built beforehand by its own row builder) into the same schema with the same PRAGMAs, in
transactions of ``--raw-batch`` reports.

    .venv/bin/python bench/ingest_throughput.py --nodes 1,100,2000 --total 40000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from gpuwarden.collector import layout
from gpuwarden.collector.ratelimit import RateLimiter
from gpuwarden.collector.server import Collector
from gpuwarden.collector.store import Store
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, ProcessInfo
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc

CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


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


async def one_agent(target: str, msgs: list[pb.NodeReport], in_flight: int) -> int:
    """Send ``msgs`` with up to ``in_flight`` unacked; a stream that ends early is opened
    again and what was not acked is sent again (as an agent resends its spool). Returns how
    many streams ended early."""
    acked, ended = 0, 0
    while acked < len(msgs):
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
            call = pb_grpc.AgentServiceStub(ch).Report()
            window = asyncio.Semaphore(in_flight)

            async def reader(call: Any = call, window: asyncio.Semaphore = window) -> None:
                nonlocal acked
                async for _ack in call:  # acks come in order on one stream
                    acked += 1
                    window.release()
                    if acked == len(msgs):
                        return

            r = asyncio.create_task(reader())
            try:
                for m in msgs[acked:]:
                    await window.acquire()
                    await call.write(m)
                await r
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                ended += 1
            finally:
                r.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await r
    return ended


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def agents(target: str, nodes: int, per_node: int, gpus: int, in_flight: int) -> None:
    """The agents' side (its own process): prints the seconds from first send to last ack."""
    t0 = time.time() - 5 * per_node - 60
    all_msgs = [
        [report_to_pb(make_report(f"n{i:04d}", s, gpus, t0)) for s in range(1, per_node + 1)]
        for i in range(nodes)
    ]
    start = time.perf_counter()
    ended = await asyncio.gather(*(one_agent(target, m, in_flight) for m in all_msgs))
    print(time.perf_counter() - start, sum(ended), flush=True)


async def collector_run(
    nodes: int, per_node: int, gpus: int, in_flight: int
) -> tuple[float, float]:
    """GPU windows/s acked, and the collector's CPU microseconds per window (the agents run in
    another process, so the figure is the collector's alone)."""
    with tempfile.TemporaryDirectory() as tmp:
        # The per-node rate limit (100 reports/s) would measure itself, not the collector.
        unlimited = RateLimiter(rate_per_s=1e9, burst=1_000_000)
        c = Collector(db_path=Path(tmp) / "bench.db", listen="127.0.0.1:0", rate_limiter=unlimited)
        await c.start()
        cpu0 = cpu_s()
        args = [f"127.0.0.1:{c.port}", str(nodes), str(per_node), str(gpus), str(in_flight)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--agents", *args, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        cpu = cpu_s() - cpu0
        if proc.returncode != 0:
            raise SystemExit(f"the agents' process failed ({proc.returncode})")
        elapsed, ended = out.decode().split()[-2:]
        stored = c.store.count_reports()
        await c.stop()
    total = nodes * per_node
    if stored != total:
        raise SystemExit(f"stored {stored} reports, expected {total}")
    if int(ended):
        print(f"({ended} of {nodes} streams ended early and were opened again)", flush=True)
    return total * gpus / float(elapsed), cpu / (total * gpus) * 1e6


def raw_sqlite(nodes: int, per_node: int, gpus: int, batch: int) -> float:
    """The floor: the rows the store writes (one per report, its job links, the window
    counter), built beforehand by the store's own row builder, inserted by bare SQL into
    the same schema with the same PRAGMAs."""
    t0 = time.time() - 5 * per_node - 60
    reports = [
        make_report(f"n{i:04d}", s, gpus, t0) for i in range(nodes) for s in range(1, per_node + 1)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "raw.db")
        conn = store.writer
        builder = layout.Writer(conn)  # adds the dictionary rows now, outside the timing
        now = time.time()
        rows = [builder.rows(r, now, None) for r in reports]
        start = time.perf_counter()
        windows = 0
        for i in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            for row in rows[i : i + batch]:
                rid = conn.execute(layout.INSERT_REPORT, row.report).lastrowid
                conn.executemany(layout.INSERT_REPORT_JOB, [(j, rid) for j in row.job_keys])
                windows += gpus
            conn.execute("UPDATE meta SET value = ? WHERE key = 'windows'", (str(windows),))
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        store.close()
    return len(reports) * gpus / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", default="1,100,2000", help="comma-separated agent counts")
    ap.add_argument("--total", type=int, default=24_000, help="reports per run (split over agents)")
    ap.add_argument("--gpus", type=int, default=8, help="GPUs per report")
    ap.add_argument("--in-flight", type=int, default=32)
    ap.add_argument("--raw-batch", type=int, default=64, help="reports per raw transaction")
    ap.add_argument("--agents", nargs=5, help=argparse.SUPPRESS)  # the agents' process
    args = ap.parse_args()
    if args.agents:
        target, n, per, g, fl = args.agents
        asyncio.run(agents(target, int(n), int(per), int(g), int(fl)))
        return
    print(f"{'agents':>7} {'reports':>8} {'GPU-windows/s':>14} {'CPU us/window':>14} "
          f"{'raw SQLite/s':>13} {'of raw':>7}")  # fmt: skip
    for nodes in (int(x) for x in args.nodes.split(",")):
        per_node = max(1, args.total // nodes)
        raw = raw_sqlite(nodes, per_node, args.gpus, args.raw_batch)
        rate, us = asyncio.run(collector_run(nodes, per_node, args.gpus, args.in_flight))
        print(f"{nodes:>7} {nodes * per_node:>8} {rate:>14,.0f} {us:>14.1f} {raw:>13,.0f} "
              f"{rate / raw:>7.0%}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
