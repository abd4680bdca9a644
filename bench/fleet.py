"""Simulated agents for the collector benches (ack_lag.py, soak.py): each on its own TCP
connection (its own subchannel), each sending one report of a template every interval at
its own phase and timing each report from send to ack, the way the real agent streams
(cumulative acks unless asked otherwise)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import grpc

from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport
from gpuwarden.common.wire import ACKS_CUMULATIVE, ACKS_KEY
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
    lags: list[tuple[float, float]] | None = None,
    ended: list[str] | None = None,
    cumulative: bool = True,
) -> tuple[list[tuple[float, float]], list[str]]:
    """Send one report every ``interval`` s; returns the ack lags and, for every stream that
    ended early, its status (the agent then opens a new stream, as a real agent does).
    ``prepare(msg, now)`` changes each report before it is sent (e.g. jobs that come and
    go); ``lags`` and ``ended``: lists to append to as it goes (read while it runs).
    ``cumulative``: ask for cumulative acks, as the real agent does (one ack covers every
    report up to its seq); False: one ack per report, as agents did before."""
    msg = template(node, gpus)
    # (send time, lag), time.monotonic()
    acked: list[tuple[float, float]] = [] if lags is None else lags
    early: list[str] = [] if ended is None else ended
    sent: dict[int, float] = {}
    seq = 0
    next_at = time.monotonic() + phase
    while next_at < until:
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
            call = pb_grpc.AgentServiceStub(ch).Report(
                metadata=((ACKS_KEY, ACKS_CUMULATIVE),) if cumulative else None
            )

            async def reader(call: Any = call) -> None:
                async for ack in call:
                    now = time.monotonic()
                    covered = [s for s in sent if s <= ack.seq] if ack.cumulative else [ack.seq]
                    for s in covered:
                        t = sent.pop(s)
                        acked.append((t, now - t))

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
                details = (await call.details() or "").replace("\n", " ")[:120]
                early.append(f"{(await call.code()).name} after {len(acked)} acks: {details}")
                sent.clear()
                next_at = max(next_at, time.monotonic() + 1.0)  # reconnect after a second
            finally:
                r.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await r
    return acked, early


async def agents(
    target: str, n: int, gpus: int, interval: float, duration: float, acks: str
) -> None:
    until = time.monotonic() + duration
    cumulative = acks == "cumulative"
    results = await asyncio.gather(
        *(
            one_agent(
                target, f"n{i:05d}", gpus, interval, interval * i / n, until, cumulative=cumulative
            )
            for i in range(n)
        )
    )
    lags = [x for lags, _ in results for x in lags]
    ended = [e for _, ended in results for e in ended]
    print(json.dumps({"lags": lags, "ended": ended}), flush=True)
