"""Replay throughput: generate a cluster trace, replay it, print lines/s and a week's estimate.

.venv/bin/python bench/replay_throughput.py --gpus 1000 --days 1 --window-s 60

Beside it, in the same run, the floor: reading the same file and parsing each line with the
JSON parser replay uses (orjson), nothing else. Rates are given per wall-clock second and per
second of this process's CPU time (the latter moves less on a shared, busy machine).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_trace import cluster_lines

from gpuwarden.collector.policy import load_policy
from gpuwarden.collector.replay import replay_lines
from gpuwarden.collector.replay_cli import open_lines
from gpuwarden.collector.trace import loads


def parse_floor(trace: Path) -> tuple[int, float, float]:
    """(lines, wall s, CPU s) to read the trace and parse every line, nothing more."""
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    for raw in open_lines(str(trace)):
        loads(raw)
        n += 1
    return n, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--gpus", type=int, default=1000)
    p.add_argument("--days", type=float, default=1.0)
    p.add_argument("--window-s", type=int, default=60)
    p.add_argument("--trace", type=Path, help="replay this file instead of generating one")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = args.trace
        if trace is None:
            trace = Path(tmp) / "trace.jsonl"
            t = time.perf_counter()
            with trace.open("w") as fh:
                for line in cluster_lines(args.gpus, args.days, args.window_s, seed=1):
                    fh.write(line + "\n")
            print(
                f"generated {trace.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t:.1f} s"
            )
        floor_lines, floor_wall, floor_cpu = parse_floor(trace)
        policies = load_policy(None, {"window": float(args.window_s)})
        t, cpu = time.perf_counter(), time.process_time()
        replayer, summary = replay_lines(open_lines(str(trace)), policies)
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    rate = summary.lines / elapsed
    week_lines = args.gpus * 7 * 86400 / args.window_s
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"replayed {summary.lines:,} lines ({summary.jobs:,} jobs) in {elapsed:.1f} s: "
        f"{rate:,.0f} lines/s ({summary.lines / cpu:,.0f} per CPU second); "
        f"{len(replayer.events):,} output lines; max RSS {rss_mib:.0f} MiB"
    )
    print(
        f"floor, same file, read + orjson parse only: {floor_lines / floor_wall:,.0f} lines/s "
        f"({floor_lines / floor_cpu:,.0f} per CPU second); replay runs at "
        f"{rate / (floor_lines / floor_wall):.1%} of it"
    )
    print(
        f"a week of {args.gpus} GPUs at {args.window_s} s ({week_lines / 1e6:.1f} M lines): "
        f"~{week_lines / rate / 60:.1f} min on one core"
    )
    print(
        f"idle GPU-hours {summary.idle_gpu_s / 3600:,.0f} of {summary.observed_gpu_s / 3600:,.0f}"
        f"; would reclaim {summary.reclaimed_gpu_s / 3600:,.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
