"""Bytes per window and per GPU-day in the embedded store: raw windows and roll-ups.

Writes a simulated day (or ``--hours``) of report windows for ``--nodes`` x ``--gpus`` into
a fresh SQLite store, the way the collector does (group commits), and prints the space each
part takes (SQLite's ``dbstat``: tables, their indexes and dictionaries), per raw window
and per GPU-day. The values vary as a real GPU's do (a utilisation mean of five integer
samples, power to the milliwatt, memory to the MiB), seeded, so every run writes the same.
It reads nothing but ``Store``'s writes, so the same file runs against an older store.

    .venv/bin/python bench/store_size.py [--nodes 2] [--gpus 4] [--hours 24] [--interval 5]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from gpuwarden.collector.store import Store
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, ProcessInfo

ROLLUP_PREFIX = "rollup"  # tables and indexes of the roll-ups; everything else is raw


def window(node: int, i: int, t: float, rng: random.Random) -> GpuWindow:
    samples = [rng.randint(0, 100) for _ in range(5)]
    util = sum(samples) / 5
    return GpuWindow(
        uuid=f"GPU-{node:04d}-{i:02d}-aaaaaaaa-bbbb-cccc-dddd",
        index=i,
        name="NVIDIA A100-SXM4-80GB",
        samples=5,
        util_mean=util,
        util_max=float(max(samples)),
        util_min=float(min(samples)),
        zero_frac=sum(1 for x in samples if x == 0) / 5,
        mem_util_mean=round(util / 2 + rng.random(), 1),
        mem_used_max_bytes=rng.randint(19_000, 21_000) << 20,
        mem_total_bytes=80 << 30,
        power_mean_w=rng.randint(90_000, 400_000) / 1000,
        temperature_c=float(rng.randint(40, 70)),
        processes=(ProcessInfo(4242, 20 << 30, "python"),),
        job=JobInfo(
            job_id=str(100_000 + node * 10 + i // 2),
            user="alice",
            account="physics",
            partition="gpu",
            name="train",
            start_time=1_700_000_000,
        ),
        allocated=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--interval", type=float, default=5.0, help="report window, seconds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = Store(path)
        rng = random.Random(13)
        t0 = 1_700_000_000.0
        steps = int(args.hours * 3600 / args.interval)
        started = time.perf_counter()
        batch: list[NodeReport] = []
        for s in range(steps):
            t = t0 + s * args.interval
            for n in range(args.nodes):
                gpus = tuple(window(n, i, t, rng) for i in range(args.gpus))
                batch.append(NodeReport(f"gpu{n:04d}", s + 1, t, t + args.interval, gpus))
            if len(batch) >= 512:
                store.write_reports(batch, t)
                batch = []
        if batch:
            store.write_reports(batch, t0)
        elapsed = time.perf_counter() - started
        store.close()
        gpu_days = args.nodes * args.gpus * args.hours / 24.0
        with sqlite3.connect(path) as db:
            sizes = dict(db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
            per_res = dict(db.execute("SELECT res, count(*) FROM rollups GROUP BY res"))
        windows = steps * args.nodes * args.gpus
        print(
            f"{args.nodes} nodes x {args.gpus} GPUs, {args.hours:g} h of {args.interval:g} s "
            f"windows: {windows} windows, {gpu_days:g} GPU-days, written in {elapsed:.1f} s "
            f"({windows / elapsed:,.0f} windows/s with roll-ups)"
        )
        raw = {k: v for k, v in sizes.items() if not k.startswith(ROLLUP_PREFIX)}
        rollup_bytes = sum(v for k, v in sizes.items() if k.startswith(ROLLUP_PREFIX))
        print(
            f"  raw windows (with indexes, dictionaries) {sum(raw.values()) / windows:7.1f} B"
            f" per window {sum(raw.values()) / gpu_days / 1e6:8.2f} MB per GPU-day"
        )
        for name, size in sorted(raw.items(), key=lambda kv: -kv[1]):
            if size / windows >= 0.05:
                print(f"    {name:32s} {size / windows:7.1f} B per window")
        print(f"  roll-ups (1 min + 1 h) {rollup_bytes / gpu_days / 1e6:8.2f} MB per GPU-day")
        rows = sum(per_res.values())
        for res, label in ((60, "1 min"), (3600, "1 h")):
            share = rollup_bytes * per_res.get(res, 0) / rows if rows else 0.0
            print(
                f"  roll-up {label:5s} {per_res.get(res, 0) / gpu_days:8.0f} rows "
                f"{share / gpu_days / 1e3:8.1f} kB per GPU-day"
            )
        year = rollup_bytes / gpu_days / rows * (per_res.get(3600, 0)) * 365 if rows else 0.0
        print(f"  a year of 1 h roll-ups: {year / 1e6:.2f} MB per GPU")


if __name__ == "__main__":
    main()
