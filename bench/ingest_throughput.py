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
import collections
import contextlib
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gpuwarden.collector import layout
from gpuwarden.collector.ratelimit import RateLimiter
from gpuwarden.collector.server import SERVER_OPTIONS, Collector
from gpuwarden.collector.store import Store
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, ProcessInfo
from gpuwarden.common.wire import ACKS_CUMULATIVE, ACKS_KEY
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
                # As an agent attributing to Slurm sends it: the job's CPU use each window.
                job=JobInfo(
                    job_id=str(100000 + i),
                    user="alice",
                    partition="gpu",
                    cpu_util_pct=float(seq % 400),
                ),
                allocated=True,
            )
            for i in range(gpus)
        ),
    )


async def one_agent(
    target: str,
    msgs: list[pb.NodeReport],
    load: Load,
    go: asyncio.Event,
    connected: asyncio.Future[None],
) -> tuple[int, list[str]]:
    """Open a connection, wait for ``go``, then send ``msgs`` with up to ``load.in_flight``
    unacked, one per message or ``load.batch`` per NodeReportBatch; a stream that ends early
    is opened again and what was not acked is sent again (as an agent resends its spool).
    Returns how many streams ended early, and why (the stream's own status: a write to a
    stream the server has ended fails here with INTERNAL "from Core" first)."""
    acked, why = 0, []
    first = True
    while acked < len(msgs):
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
            if first:
                await ch.channel_ready()
                connected.set_result(None)
                await go.wait()
                first = False
            stub = pb_grpc.AgentServiceStub(ch)
            if load.acks == "batch":
                call: Any = stub.ReportBatch()
            else:
                cumulative = load.acks == "cumulative"
                call = stub.Report(metadata=((ACKS_KEY, ACKS_CUMULATIVE),) if cumulative else None)
            window = asyncio.Semaphore(load.in_flight)

            async def reader(call: Any = call, window: asyncio.Semaphore = window) -> None:
                nonlocal acked
                async for ack in call:  # acks come in order on one stream
                    now_acked = ack.seq if ack.cumulative else acked + 1
                    for _ in range(now_acked - acked):
                        window.release()
                    acked = now_acked
                    if acked == len(msgs):
                        return

            r = asyncio.create_task(reader())
            start = acked
            try:
                step = load.batch if load.acks == "batch" else 1
                for i in range(acked, len(msgs), step):
                    part = msgs[i : i + step]
                    for _ in part:
                        await window.acquire()
                    if load.acks == "batch":
                        await call.write(pb.NodeReportBatch(node=part[0].node, reports=part))
                    else:
                        await call.write(part[0])
                await r
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                code = await call.code()
                why.append(
                    f"{code.name}: {await call.details()} "
                    f"({'after' if acked > start else 'before'} an ack)"
                )
            finally:
                r.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await r
    return len(why), why


class _BareAgentService(pb_grpc.AgentServiceServicer):
    """The transport floor: receives the same stream and acks each report at once (or, on a
    cumulative or batch stream, the newest report read whenever the acking task runs),
    without validating or storing anything."""

    async def Report(self, request_iterator: Any, context: Any) -> None:
        if (ACKS_KEY, ACKS_CUMULATIVE) not in tuple(context.invocation_metadata() or ()):
            async for msg in request_iterator:
                await context.write(pb.Ack(node=msg.node, seq=msg.seq))
            return
        await _ack_newest(request_iterator, context, lambda msg: msg)

    async def ReportBatch(self, request_iterator: Any, context: Any) -> None:
        await _ack_newest(request_iterator, context, lambda batch: batch.reports[-1])


async def _ack_newest(messages: Any, context: Any, newest_of: Any) -> None:
    newest: list[Any] = []
    wake = asyncio.Event()

    async def acker() -> None:
        acked = None
        while True:
            await wake.wait()
            wake.clear()
            if newest[-1] is None:
                return
            if newest[-1] is not acked:
                acked = newest[-1]
                await context.write(pb.Ack(node=acked.node, seq=acked.seq, cumulative=True))

    task = asyncio.create_task(acker())
    async for msg in messages:
        newest.append(newest_of(msg))
        del newest[:-1]
        wake.set()
    newest.append(None)
    wake.set()
    await task


@dataclass(frozen=True)
class Load:
    """What the agents' process sends: ``nodes`` streams of ``per_node`` reports of ``gpus``
    GPUs, at most ``in_flight`` unacked each; ``acks``: ``per-report`` (an ack per report),
    ``cumulative`` (Report asking for cumulative acks) or ``batch`` (ReportBatch, ``batch``
    reports per message)."""

    nodes: int
    per_node: int
    gpus: int
    in_flight: int
    acks: str
    batch: int = 16

    @property
    def windows(self) -> int:
        return self.nodes * self.per_node * self.gpus

    def argv(self) -> list[str]:
        return [
            str(v)
            for v in (self.nodes, self.per_node, self.gpus, self.in_flight, self.acks, self.batch)
        ]


async def transport_floor(load: Load) -> tuple[float, float]:
    """The same agents against a bare grpc.aio server (the collector's server options):
    windows/s and its CPU us/window."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_AgentServiceServicer_to_server(_BareAgentService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        return await _drive(f"127.0.0.1:{port}", load)
    finally:
        await server.stop(None)


async def _drive(target: str, load: Load) -> tuple[float, float]:
    """Run the agents' process against ``target`` once all its connections are open:
    windows/s, and this process's CPU microseconds per window meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--agents",
        target,
        *load.argv(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    line = (await proc.stdout.readline()).decode().split()
    if not line or line[0] != "ready":
        raise SystemExit(f"the agents' process failed ({await proc.wait()})")
    cpu0 = cpu_s()
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    out = await proc.stdout.readline()
    cpu = cpu_s() - cpu0
    if await proc.wait() != 0:
        raise SystemExit(f"the agents' process failed ({proc.returncode})")
    elapsed, ended, why = out.decode().split(maxsplit=2)
    if int(ended):
        print(f"({ended} of {load.nodes} streams ended early, {why.strip()}; opened again)")
    return load.windows / float(elapsed), cpu / load.windows * 1e6


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def agents(target: str, load: Load) -> None:
    """The agents' side (its own process). Opens every connection, prints ``ready``, waits
    for a line on stdin, then sends; prints the seconds from first send to last ack, how
    many streams ended early and with which status."""
    t0 = time.time() - 5 * load.per_node - 60
    all_msgs = [
        [
            report_to_pb(make_report(f"n{i:04d}", s, load.gpus, t0))
            for s in range(1, load.per_node + 1)
        ]
        for i in range(load.nodes)
    ]
    go = asyncio.Event()
    loop = asyncio.get_running_loop()
    connected = [loop.create_future() for _ in all_msgs]
    runs = [
        asyncio.create_task(one_agent(target, m, load, go, c))
        for m, c in zip(all_msgs, connected, strict=True)
    ]
    await asyncio.gather(*connected)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    start = time.perf_counter()
    go.set()
    results = await asyncio.gather(*runs)
    why = collections.Counter(code for _, codes in results for code in codes)
    print(time.perf_counter() - start, sum(n for n, _ in results), dict(why), flush=True)


async def collector_run(load: Load, commit_window_s: float | None) -> tuple[float, float]:
    """GPU windows/s acked, and the collector's CPU microseconds per window (the agents run in
    another process, so the figure is the collector's alone). ``commit_window_s``: the
    collector's commit window (None: its default)."""
    with tempfile.TemporaryDirectory() as tmp:
        # The per-node rate limit (100 reports/s) would measure itself, not the collector.
        unlimited = RateLimiter(rate_per_s=1e9, burst=1_000_000)
        c = Collector(db_path=Path(tmp) / "bench.db", listen="127.0.0.1:0", rate_limiter=unlimited)
        if commit_window_s is not None:
            c.ingestor.commit_window_s = commit_window_s
        await c.start()
        try:
            rate, us = await _drive(f"127.0.0.1:{c.port}", load)
            stored = c.store.count_reports()
        finally:
            await c.stop()
    if stored != load.nodes * load.per_node:
        raise SystemExit(f"stored {stored} reports, expected {load.nodes * load.per_node}")
    return rate, us


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
    ap.add_argument(
        "--acks", default="per-report,cumulative,batch", help="ways of sending to measure"
    )
    ap.add_argument("--batch", type=int, default=16, help="reports per batch message")
    ap.add_argument("--raw-batch", type=int, default=64, help="reports per raw transaction")
    ap.add_argument(
        "--commit-windows",
        default="",
        help="comma-separated commit windows in ms, each measured (default: the collector's)",
    )
    ap.add_argument("--agents", nargs=7, help=argparse.SUPPRESS)  # the agents' process
    args = ap.parse_args()
    if args.agents:
        target, n, per, g, fl, acks, batch = args.agents
        asyncio.run(agents(target, Load(int(n), int(per), int(g), int(fl), acks, int(batch))))
        return
    windows = [float(ms) / 1000 for ms in args.commit_windows.split(",") if ms] or [None]
    print(f"{'agents':>7} {'reports':>8} {'acks':>11} {'window':>7} {'transport/s':>12} "
          f"{'us/window':>10} {'collector/s':>12} {'us/window':>10} {'raw SQLite/s':>13} "
          f"{'of raw':>7}")  # fmt: skip
    for nodes in (int(x) for x in args.nodes.split(",")):
        per_node = max(1, args.total // nodes)
        raw = raw_sqlite(nodes, per_node, args.gpus, args.raw_batch)
        for acks in args.acks.split(","):
            load = Load(nodes, per_node, args.gpus, args.in_flight, acks, args.batch)
            floor, floor_us = asyncio.run(transport_floor(load))
            for window_s in windows:
                rate, us = asyncio.run(collector_run(load, window_s))
                shown = "default" if window_s is None else f"{window_s * 1000:g} ms"
                print(f"{nodes:>7} {nodes * per_node:>8} {acks:>11} {shown:>7} {floor:>12,.0f} "
                      f"{floor_us:>10.1f} {rate:>12,.0f} {us:>10.1f} {raw:>13,.0f} "
                      f"{rate / raw:>7.0%}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
