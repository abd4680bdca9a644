#!/usr/bin/env python3
"""How fast an agent's backlog drains: N spooled reports sent to a fresh collector.

    .venv/bin/python bench/agent_drain.py [--reports 10000] [--gpus 8] [--rounds 2]
        [--before REV]

For each round and each agent (this tree's, and with ``--before REV`` the agent of that git
revision, its sources from ``git archive``), a fresh in-process collector (no per-node rate
limit) and, in a second process, the agent's ``ReportStreamer`` with a spool of
``--reports`` reports of ``--gpus`` GPUs, written before the clock starts. The clock runs
from the streamer's start to an empty spool (every report acked). Prints the wall time,
reports/s, the agent process's CPU and the collector process's CPU during the drain, and
the acks and batch messages it took (a revision that does not count them shows ``-``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent_overhead import source_tree  # type: ignore[import-not-found]

from gpuwarden.collector.ratelimit import RateLimiter
from gpuwarden.collector.server import Collector

AGENT = r"""
import json, sys, threading, time
from pathlib import Path
from gpuwarden.agent.client import ReportStreamer
from gpuwarden.agent.spool import Spool
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, NodeReport

port, node, count, gpus, folder = sys.argv[1:6]
count, gpus = int(count), int(gpus)
spool = Spool(Path(folder), max_reports=2 * count)
start = time.time() - 5 * count
for i in range(count):
    seq = spool.next_seq()
    report = NodeReport(
        node=node, seq=seq, window_start=start + 5 * i, window_end=start + 5 * i + 5,
        gpus=tuple(
            GpuWindow(uuid=f"GPU-{node}-{g}", index=g, samples=5, util_mean=40.0, util_max=50.0)
            for g in range(gpus)
        ),
    )
    spool.put(seq, report_to_pb(report).SerializeToString())
print("ready", flush=True)
sys.stdin.readline()
streamer = ReportStreamer(f"127.0.0.1:{port}", spool)
thread = threading.Thread(target=streamer.run)
cpu0, wall0 = time.process_time(), time.perf_counter()
thread.start()
while len(spool):
    time.sleep(0.02)
wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
streamer.stop()
thread.join()
print(json.dumps({
    "wall_s": wall, "cpu_s": cpu, "acked": streamer.acked,
    "acks": getattr(streamer, "acks", None), "batches": getattr(streamer, "batches", None),
    "connections": streamer.connections,
}), flush=True)
"""


async def drain(tmp: Path, name: str, pythonpath: str, reports: int, gpus: int) -> dict[str, float]:
    collector = Collector(
        db_path=tmp / f"{name}.sqlite", listen="127.0.0.1:0", rate_limiter=RateLimiter(1e6, 1e6)
    )
    await collector.start()
    try:
        node = f"drain-{name}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            AGENT,
            str(collector.port),
            node,
            str(reports),
            str(gpus),
            str(tmp / f"spool-{name}"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"},
            cwd=tmp,  # not the repository: ``-c`` puts the working folder first on sys.path
        )
        assert proc.stdin is not None and proc.stdout is not None
        if (await proc.stdout.readline()).strip() != b"ready":
            raise SystemExit(f"the agent of {name} did not start")
        cpu0 = time.process_time()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        collector_cpu = time.process_time() - cpu0
        await proc.wait()
        if not line:
            raise SystemExit(f"the agent of {name} ended without a result")
        result: dict[str, float] = json.loads(line)
        result["collector_cpu_s"] = collector_cpu
        stored = collector.store.count_reports()
        if stored != reports:
            raise SystemExit(f"{name}: {stored} reports stored, not {reports}")
        return result
    finally:
        await collector.stop()


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


async def main(reports: int, gpus: int, rounds: int, before: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        trees = {"this tree": ""}  # the installed package: this tree
        if before is not None:
            trees = {before: str(source_tree(before, tmp / "before")), **trees}
        print(f"{reports:,} spooled reports of {gpus} GPUs, drained to a fresh collector")
        print(
            f"{'round':>5}  {'agent':>10}  {'wall s':>7}  {'reports/s':>9}  {'agent CPU s':>11}  "
            f"{'collector CPU s':>15}  {'acks':>7}  {'batches':>7}"
        )
        for r in range(1, rounds + 1):
            for i, (name, path) in enumerate(trees.items()):
                res = await drain(tmp, f"r{r}-{i}", path, reports, gpus)
                print(
                    f"{r:>5}  {name[:10]:>10}  {res['wall_s']:>7.2f}  "
                    f"{reports / res['wall_s']:>9,.0f}  {res['cpu_s']:>11.2f}  "
                    f"{res['collector_cpu_s']:>15.2f}  {_count(res['acks']):>7}  "
                    f"{_count(res['batches']):>7}",
                    flush=True,
                )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reports", type=int, default=10_000)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--before", metavar="REV", help="also drain with the agent of this revision")
    a = ap.parse_args()
    asyncio.run(main(a.reports, a.gpus, a.rounds, a.before))
