#!/usr/bin/env python3
"""Ack lag at scale: N agents, each on its own TCP connection, each sending one report of
``--gpus`` GPUs every ``--interval`` seconds (phases spread evenly), against one in-process
collector with detection running (dry run, rules every ``--evaluate`` s).

Prints the distribution of the time from a report's send to its ack (= durably stored) and
the collector's share of a core, once per ``--commit-window`` value in the same run (0 is
the baseline: every transaction starts as soon as one report is there).

    .venv/bin/python bench/ack_lag.py --agents 2000 --duration 60 --commit-window 0,0.005
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from gpuwarden.collector.enforce import attach_enforcement
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.server import Collector
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc

CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def template(node: str, gpus: int) -> pb.NodeReport:
    return report_to_pb(
        NodeReport(
            node=node,
            seq=1,
            window_start=0.0,
            window_end=5.0,
            gpus=tuple(
                GpuWindow(
                    uuid=f"GPU-{node}-{i}",
                    index=i,
                    samples=5,
                    util_mean=0.0 if i == 0 else 60.0,  # one idle GPU per node: rules work
                    util_max=0.0 if i == 0 else 95.0,
                    mem_used_max_bytes=2 << 30,
                    mem_total_bytes=80 << 30,
                    power_mean_w=250.0,
                    job=JobInfo(job_id=f"{node[1:]}{i}", user="alice", partition="gpu"),
                    allocated=True,
                )
                for i in range(gpus)
            ),
        )
    )


async def one_agent(
    target: str,
    node: str,
    gpus: int,
    interval: float,
    phase: float,
    until: float,
    *,
    prepare: Callable[[pb.NodeReport, float], None] | None = None,
    lags: list[float] | None = None,
    ended: list[str] | None = None,
) -> tuple[list[float], list[str]]:
    """Send one report every ``interval`` s; returns the ack lags and, for every stream that
    ended early, its status (the agent then opens a new stream, as a real agent does).
    ``prepare(msg, now)`` changes each report before it is sent (e.g. jobs that come and
    go); ``lags`` and ``ended``: lists to append to as it goes (read while it runs)."""
    msg = template(node, gpus)
    acked: list[float] = [] if lags is None else lags
    early: list[str] = [] if ended is None else ended
    sent: dict[int, float] = {}
    seq = 0
    next_at = time.monotonic() + phase
    while next_at < until:
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
            call = pb_grpc.AgentServiceStub(ch).Report()

            async def reader(call: Any = call) -> None:
                async for ack in call:
                    acked.append(time.monotonic() - sent.pop(ack.seq))

            r = asyncio.create_task(reader())
            try:
                while next_at < until:
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    seq += 1
                    now = time.time()
                    msg.seq, msg.window_start, msg.window_end = seq, now - interval, now
                    if prepare is not None:
                        prepare(msg, now)
                    sent[seq] = time.monotonic()
                    await call.write(msg)
                    next_at += interval
                await call.done_writing()
                await r
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                # a write after the RPC ended raises InvalidStateError: ask the call why
                early.append(f"{(await call.code()).name} after {len(acked)} acks")
                sent.clear()
                next_at = max(next_at, time.monotonic() + 1.0)  # reconnect after a second
            finally:
                r.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await r
    return acked, early


async def agents(target: str, n: int, gpus: int, interval: float, duration: float) -> None:
    until = time.monotonic() + duration
    results = await asyncio.gather(
        *(one_agent(target, f"n{i:05d}", gpus, interval, interval * i / n, until) for i in range(n))
    )
    lags = [x for lags, _ in results for x in lags]
    ended = [e for _, ended in results for e in ended]
    print(json.dumps({"lags": lags, "ended": ended}), flush=True)


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def run(args: argparse.Namespace, window: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        c = Collector(db_path=Path(tmp) / "bench.db", listen="127.0.0.1:0")
        c.ingestor.commit_window_s = window
        await c.start()
        attach_enforcement(
            c,
            policies=PolicySet(),
            executor=None,
            audit_jsonl=None,
            evaluate_interval_s=args.evaluate,
        )
        cpu0, t0 = cpu_s(), time.perf_counter()
        argv = [f"127.0.0.1:{c.port}", str(args.agents), str(args.gpus), str(args.interval)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--as-agents", *argv, str(args.duration),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        cpu, wall = cpu_s() - cpu0, time.perf_counter() - t0
        await c.stop()
    if proc.returncode != 0:
        raise SystemExit(f"the agents' process failed ({proc.returncode})")
    result = json.loads(out.decode().splitlines()[-1])
    lags = sorted(result["lags"])
    if not lags:
        raise SystemExit("no acks")
    ended = Counter(e.split()[0] for e in result["ended"])
    before_first = sum(1 for e in result["ended"] if e.endswith(" 0 acks"))
    q = statistics.quantiles(lags, n=100, method="inclusive")
    return (
        f"{window * 1000:>9.0f} {len(lags):>7} {q[49] * 1000:>7.1f} {q[98] * 1000:>8.1f} "
        f"{lags[-1] * 1000:>8.1f} {cpu / wall:>10.0%}   "
        f"{dict(ended) or 'none'} ({before_first} before any ack)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--agents", type=int, default=2000)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of sending per run")
    ap.add_argument("--evaluate", type=float, default=15.0, help="rule evaluation interval, s")
    ap.add_argument("--commit-window", default="0,0.005", help="comma-separated seconds")
    ap.add_argument("--as-agents", nargs=5, help=argparse.SUPPRESS)  # the agents' process
    args = ap.parse_args()
    if args.as_agents:
        target, n, g, iv, d = args.as_agents
        asyncio.run(agents(target, int(n), int(g), float(iv), float(d)))
        return
    print(
        f"{args.agents} agents x {args.gpus} GPUs every {args.interval:g} s, "
        f"{args.duration:g} s per run, one connection each"
    )
    print(
        f"{'window ms':>9} {'acks':>7} {'p50 ms':>7} {'p99 ms':>8} {'max ms':>8} {'collector':>10}"
    )
    for w in (float(x) for x in args.commit_window.split(",")):
        print(asyncio.run(run(args, w)), flush=True)


if __name__ == "__main__":
    main()
