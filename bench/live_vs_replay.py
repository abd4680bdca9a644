"""Events of the live collector against ``gpuwarden replay`` on the same generated cluster.

The trace goes through a real collector (ingest, SQLite store, enforcement wiring) on a
simulated clock, and through replay, with the same policy; prints both event counts, by
outcome, and whether every record (evidence included) is the same.

.venv/bin/python bench/live_vs_replay.py --gpus 64 --days 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpuwarden.collector.policy import load_policy
from tests.live_feed import comparable, gen_trace, live_records, replay_records


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--gpus", type=int, default=64)
    p.add_argument("--days", type=float, default=0.5)
    p.add_argument("--window-s", type=int, default=60)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--policy", type=Path, help="TOML file with a [policy] table")
    p.add_argument("--enforce", action="store_true")
    args = p.parse_args()
    policies = load_policy(args.policy, {"enforce": True if args.enforce else None})
    lines = [
        x.encode()
        for x in gen_trace().cluster_lines(args.gpus, args.days, args.window_s, args.seed)
    ]
    t0 = time.perf_counter()
    replayed = comparable(replay_records(lines, policies))
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        records, enforcer = asyncio.run(live_records(lines, policies, Path(tmp) / "c.db"))
    t2 = time.perf_counter()
    live = comparable(records)
    print(f"trace: {args.gpus} GPUs, {args.days * 24:g} h, {len(lines)} lines")
    for name, events, took in (("replay", replayed, t1 - t0), ("live", live, t2 - t1)):
        outcomes = dict(Counter(r[4] for r in events))
        print(f"{name:>6}: {len(events)} events in {took:.1f} s: {outcomes}")
    print(f"late windows (live): {enforcer.engine.late_windows}")
    print(f"identical records: {live == replayed}")
    return 0 if live == replayed else 1


if __name__ == "__main__":
    raise SystemExit(main())
