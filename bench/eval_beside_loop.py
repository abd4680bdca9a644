#!/usr/bin/env python3
"""What one rule evaluation does to the event loop beside it, without agents or a store.

An :class:`Enforcer` is handed ``--jobs`` one-GPU jobs' windows (``--windows`` each, one
report of 8 GPUs per node and window end, as ingest hands them over), then evaluated in its
worker thread while the event loop runs a ticker that sleeps 1 ms at a time (each wake-up
needs the GIL, as each ack written does). Per mode, interleaved ``--repeat`` times: the
evaluation's wall and CPU time and how late the ticker woke meanwhile.

- ``one-go``: the whole pass at once (before);
- ``slices``: the loop runs after every ``slice_s`` of work (the collector's way now);
- ``frozen``: ``slices`` with what was alive before the pass frozen (``gc.freeze``), as the
  daemon's :class:`GcFreezer` leaves it after the previous pass;
- ``idle``: no evaluation, the same ticker (the floor).

    .venv/bin/python bench/eval_beside_loop.py --jobs 16000 --windows 3 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gpuwarden.collector.audit import AuditLog
from gpuwarden.collector.enforce import Enforcer, loop_turn
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.store import Store
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, SlurmStatus

MODES = ("one-go", "slices", "frozen", "idle")


def reports(jobs: int, windows: int, now: float) -> list[NodeReport]:
    """``windows`` reports per node of 8 one-GPU jobs, every 5 s up to ``now - 60``."""
    out = []
    for k in range(windows):
        for n in range(jobs // 8):
            end = now - 60 - 5 * (windows - k) + n * 5.0 / (jobs // 8)  # phases spread
            gpus = tuple(
                GpuWindow(
                    uuid=f"GPU-{n}-{i}",
                    index=i,
                    samples=5,
                    util_max=0.0 if i == 0 else 95.0,
                    util_mean=0.0 if i == 0 else 60.0,
                    mem_used_max_bytes=2 << 30,
                    mem_total_bytes=80 << 30,
                    job=JobInfo(job_id=f"{n}{i}", user="alice", partition="gpu"),
                    allocated=True,
                )
                for i in range(8)
            )
            out.append(NodeReport(f"n{n:05d}", k + 1, end - 5, end, gpus, SlurmStatus(True)))
    return out


class GcTimes:
    """Time spent in the cyclic garbage collector, by generation (a ``gc.callbacks`` entry)."""

    def __init__(self) -> None:
        self.spent = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self._t = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            took = time.perf_counter() - self._t
            self.spent[info["generation"]] += took
            self.longest[info["generation"]] = max(self.longest[info["generation"]], took)


async def trial(mode: str, enforcer: Enforcer, batch: list[NodeReport], now: float) -> str:
    late: list[float] = []
    done = asyncio.Event()
    collections = GcTimes()
    gc.callbacks.append(collections)

    async def ticker() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append(time.perf_counter() - t - 0.001)

    tick = asyncio.create_task(ticker())
    enforcer.on_stored(batch)
    sliced = mode in ("slices", "frozen")
    enforcer.pause = loop_turn(asyncio.get_running_loop()) if sliced else None
    if mode == "frozen":
        gc.freeze()

    def evaluate() -> float:
        c0 = time.thread_time()
        enforcer.evaluate(now)
        return time.thread_time() - c0

    t0 = time.perf_counter()
    if mode == "idle":
        await asyncio.sleep(0.5)
        cpu = 0.0
    else:
        cpu = await asyncio.to_thread(evaluate)
    wall = time.perf_counter() - t0
    done.set()
    await tick
    gc.callbacks.remove(collections)
    gc.unfreeze()
    q = statistics.quantiles(late, n=100, method="inclusive")
    return (
        f"{mode:>7} {wall * 1000:>8.0f} {cpu * 1000:>8.0f} {len(late) / wall:>8.0f} "
        f"{q[49] * 1000:>8.2f} {q[98] * 1000:>8.2f} {max(late) * 1000:>8.1f}   "
        + " / ".join(f"{t * 1000:.0f}" for t in collections.spent)
        + f" ms (longest full collection {collections.longest[2] * 1000:.0f} ms)"
    )


async def main(args: argparse.Namespace) -> None:
    now = time.time()
    print(
        f"{args.jobs} one-GPU jobs x {args.windows} windows per evaluation; switch interval "
        f"{sys.getswitchinterval() * 1000:g} ms; the ticker sleeps 1 ms at a time"
    )
    print(
        f"{'mode':>7} {'wall ms':>8} {'CPU ms':>8} {'ticks/s':>8} "
        f"{'late p50':>8} {'late p99':>8} {'late max':>8}   GC generation 0 / 1 / 2"
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "e.db")
        audit = AuditLog(jsonl=Path(tmp) / "audit.jsonl")
        for r in range(args.repeat):
            for mode in MODES:
                # a fresh enforcer per trial: the same work each time
                enforcer = Enforcer(store=store, policies=PolicySet(), audit=audit, executor=None)
                batch = reports(args.jobs, args.windows, now + r)
                print(await trial(mode, enforcer, batch, now + r), flush=True)
        audit.close()
        store.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=16000)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    asyncio.run(main(ap.parse_args()))
