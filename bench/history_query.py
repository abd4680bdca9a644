#!/usr/bin/env python3
"""History of one job over a week, in a store of millions of windows.

Fills a fresh store the way the collector does (group commits, roll-ups in the same
transaction) with ``--nodes`` x ``--gpus`` GPUs reporting every ``--interval`` s for
``--days`` days (defaults: 4 x 8 x 5 s x 7 days = 3.9 M windows); one job holds node 0's
GPUs the whole time, other nodes run a new job every hour. Then asks for that job's whole
history, the way ``GetHistory`` does (resolution picked by range, i.e. 1-minute roll-ups
for a week), beside the same query over the raw windows in the same run (the baseline):
milliseconds (median of ``--repeat``), records returned and whether the answer was complete.

    .venv/bin/python bench/history_query.py [--days 7] [--nodes 4] [--db PATH to keep it]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from gpuwarden.collector.retention import DAY, Retention
from gpuwarden.collector.store import Store
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport

JOB = "4242"
LIMIT = 100_000  # the query API's largest page (collector/server.py HISTORY_MAX_LIMIT)


def fill(store: Store, nodes: int, gpus: int, interval: float, t0: float, t1: float) -> int:
    n_windows, seq, batch = 0, 0, []
    t = t0
    while t < t1:
        seq += 1
        for n in range(nodes):
            job = JOB if n == 0 else f"{n}{int(t // 3600)}"
            batch.append(
                NodeReport(
                    node=f"node{n:03d}",
                    seq=seq,
                    window_start=t,
                    window_end=t + interval,
                    gpus=tuple(
                        GpuWindow(
                            uuid=f"GPU-{n:04d}-{i:02d}-aaaa-bbbb-cccc-dddddddddddd",
                            index=i,
                            samples=5,
                            util_mean=float((seq + i) % 100),
                            util_max=100.0,
                            mem_used_max_bytes=8 << 30,
                            mem_total_bytes=80 << 30,
                            power_mean_w=200.0,
                            job=JobInfo(job_id=job, user="alice", partition="gpu"),
                            allocated=True,
                        )
                        for i in range(gpus)
                    ),
                )
            )
        if len(batch) >= 512:
            store.write_reports(batch, t)
            n_windows += len(batch) * gpus
            batch = []
        t += interval
    if batch:
        store.write_reports(batch, t)
        n_windows += len(batch) * gpus
    return n_windows


def timed(store: Store, resolution: int | None, since: float, until: float, repeat: int) -> str:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = store.history(
            job_id=JOB, since=since, until=until, limit=LIMIT, resolution=resolution
        )
        times.append(time.perf_counter() - start)
    assert out is not None
    records, truncated = out
    used = store.resolution_for("", "", JOB, since, until) if resolution is None else resolution
    return (
        f"{used:>10} {statistics.median(times) * 1000:>9.0f} {len(records):>9,} "
        f"{'TRUNCATED' if truncated else 'complete':>10}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--db", type=Path, help="keep the store here (reused when it exists)")
    args = ap.parse_args()
    t1 = time.time() - 60
    t0 = t1 - args.days * DAY
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "history.db"
        fresh = not path.exists()
        store = Store(path, retention=Retention(raw_s=args.days * DAY + DAY))
        if fresh:
            start = time.perf_counter()
            n = fill(store, args.nodes, args.gpus, args.interval, t0, t1)
            print(f"filled {n:,} windows in {time.perf_counter() - start:.0f} s")
        wal = Path(f"{path}-wal")
        size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        windows = store.count_windows()
        print(
            f"store: {windows:,} windows, {size / 1e6:,.0f} MB"
            f" ({size / max(1, windows):.0f} B per window, roll-ups included)"
        )
        since, until = t1 - args.days * DAY, t1 + 60
        print(f"job {JOB}, {args.gpus} GPUs, {args.days:g} days, page limit {LIMIT:,}")
        print(f"{'resolution':>10} {'median ms':>9} {'records':>9} {'answer':>10}")
        print(timed(store, 0, since, until, args.repeat), "(baseline: raw windows)")
        print(timed(store, None, since, until, args.repeat), "(as GetHistory picks it)")
        store.close()


if __name__ == "__main__":
    main()
