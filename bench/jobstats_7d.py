"""``gpuwarden jobstats`` for a long job: build a store holding one 8-GPU job of ``--days``
days (one window per GPU every ``--window-s``), start a collector on it and time, over
real gRPC on loopback: the first request for the running job (rebuilt from its raw
windows, as after a collector restart), the next ones (from the live accumulator that
every stored report feeds), the summary written at the job's end, and the requests for the
ended job (from its stored summary). Also the accumulator's cost per stored window.

.venv/bin/python bench/jobstats_7d.py --days 7 --window-s 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from gpuwarden.collector.jobstats import JobAccumulator
from gpuwarden.collector.server import Collector
from gpuwarden.collector.store import Store
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, WindowRecord
from gpuwarden.query import QueryClient

GIB = 1 << 30


def build(db: Path, days: float, window_s: float, gpus: int, t0: float) -> int:
    store = Store(db)
    job = JobInfo(job_id="777", user="alice", account="a1", partition="gpu", start_time=int(t0))
    n = int(days * 86400 / window_s)
    batch: list[NodeReport] = []
    for k in range(n):
        busy = (k // 720) % 3 != 0  # an hour idle in every three
        ws = t0 + k * window_s
        g = tuple(
            GpuWindow(
                uuid=f"GPU-{i}",
                index=i,
                samples=5,
                util_mean=60.0 if busy else 0.0,
                util_max=95.0 if busy else 0.0,
                mem_used_max_bytes=20 * GIB,
                mem_total_bytes=80 * GIB,
                power_mean_w=300.0 if busy else 60.0,
                job=job,
                allocated=True,
                extra_mean={"sm_active_pct": 40.0},
            )
            for i in range(gpus)
        )
        batch.append(NodeReport("gpu01", k + 1, ws, ws + window_s, g))
        if len(batch) == 2000:
            store.write_reports(batch, received=ws)
            batch = []
    if batch:
        store.write_reports(batch, received=t0)
    count = store.count_windows()
    store.close()
    return count


async def timed(client: QueryClient, job_id: str, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        stats = await client.job_stats(job_id)
        out.append((time.perf_counter() - t) * 1000)
        assert stats is not None
    return out


async def run(args: argparse.Namespace, db: Path, t0: float) -> None:
    collector = Collector(db_path=db)
    await collector.start()
    try:
        async with QueryClient(f"127.0.0.1:{collector.port}", timeout_s=600) as client:
            first = await timed(client, "777", 1)
            print(f"running job, first request after a restart (rebuilt): {first[0]:.0f} ms")
            live = await timed(client, "777", args.repeat)
            print(
                f"running job, from its accumulator over gRPC: median "
                f"{statistics.median(live):.1f} ms, max {max(live):.1f} ms ({args.repeat} calls)"
            )
            end = t0 + args.days * 86400
            t = time.perf_counter()
            await asyncio.to_thread(collector.jobstats.on_run_end, ("777", int(t0), end))
            print(f"summary written at the job's end: {(time.perf_counter() - t) * 1000:.0f} ms")
            ended = await timed(client, "777", args.repeat)
            print(
                f"ended job, from its summary over gRPC: median {statistics.median(ended):.1f} ms,"
                f" max {max(ended):.1f} ms ({args.repeat} calls)"
            )
    finally:
        await collector.stop()


def accumulate_cost(gpus: int, n: int) -> float:
    """Microseconds per window to add stored windows to a job's accumulator."""
    acc = JobAccumulator("777")
    job = JobInfo(job_id="777", user="alice")
    recs = [
        WindowRecord(
            "gpu01",
            k * 5.0,
            k * 5.0 + 5.0,
            GpuWindow(
                uuid=f"GPU-{i}", index=i, util_mean=30.0, util_max=float(k % 2) * 90, job=job
            ),
        )
        for k in range(n // gpus)
        for i in range(gpus)
    ]
    t = time.perf_counter()
    for rec in recs:
        acc.add(rec)
    return (time.perf_counter() - t) / len(recs) * 1e6


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--window-s", type=float, default=5.0)
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    t0 = time.time() - args.days * 86400 - 60
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "c.db"
        t = time.perf_counter()
        n = build(db, args.days, args.window_s, args.gpus, t0)
        print(
            f"store: {n} windows ({args.gpus} GPUs x {args.days:g} days every "
            f"{args.window_s:g} s), {db.stat().st_size / 1e6:.0f} MB, "
            f"built in {time.perf_counter() - t:.0f} s"
        )
        asyncio.run(run(args, db, t0))
    print(f"accumulator: {accumulate_cost(args.gpus, 200_000):.1f} us per stored window")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
