#!/usr/bin/env python3
"""The store's share of ingest: ``Store.write_reports`` CPU per GPU window.

Builds ``--reports`` reports of ``--gpus`` GPUs from ``--nodes`` nodes (store_size.py's
windows, values varying as a real GPU's do), each window's message as the collector
receives it, then writes them in transactions of ``--batch`` reports, roll-ups on, as
the collector's group commit does, into a fresh store (WAL, synchronous=FULL). Prints
wall time and this process's CPU per window, ``--repeat`` times. Only ``Store``'s public
API is used.

    .venv/bin/python bench/store_write.py [--reports 20000] [--gpus 8] [--nodes 100]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from store_size import window  # the same GPU windows as the size bench

from gpuwarden.collector.store import Store
from gpuwarden.common.convert import gpu_to_pb
from gpuwarden.common.types import NodeReport


def make(nodes: int, count: int, gpus: int, rng: random.Random) -> list[NodeReport]:
    t0 = time.time() - 86_400
    out = []
    for k in range(count):
        node, seq = k % nodes, k // nodes + 1
        t = t0 + 5 * seq
        windows = tuple(window(node, i, t, rng) for i in range(gpus))
        out.append(NodeReport(f"node{node:04d}", seq, t, t + 5, windows))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reports", type=int, default=20_000)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    reports = make(args.nodes, args.reports, args.gpus, random.Random(7))
    windows = args.reports * args.gpus
    for run in range(args.repeat):
        # the windows' messages as a stream receives them (the store strips them: anew each run)
        received = [[gpu_to_pb(g) for g in r.gpus] for r in reports]
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "bench.db")
            wall0, cpu0 = time.perf_counter(), time.process_time()
            for i in range(0, len(reports), args.batch):
                store.write_reports(
                    reports[i : i + args.batch], time.time(), received[i : i + args.batch]
                )
            store.close()  # what is left of the roll-ups is written here
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        print(
            f"run {run + 1}: {windows:,} windows in {wall:.2f} s: {windows / wall:,.0f} windows/s,"
            f" {cpu / windows * 1e6:.1f} us CPU per window"
        )


if __name__ == "__main__":
    main()
