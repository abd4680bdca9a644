#!/usr/bin/env python3
"""Ack lag at scale: N agents, each on its own TCP connection, each sending one report of
``--gpus`` GPUs every ``--interval`` seconds (phases spread evenly), against one in-process
collector with detection running (dry run, rules every ``--evaluate`` s).

Prints, per variant, the distribution of the time from a report's send to its ack (=
durably stored), over the whole run and after the first two intervals (all agents connect
at once at the start), the collector's share of a core and its split by thread, how late
the event loop wakes from a 5 ms sleep, each evaluation's wall and CPU time, and the lag of
the acks that overlapped an evaluation beside the others. Variants, run in the given order:

- ``step``: today's collector (the evaluation thread lets the event loop run after every
  slice of work);
- ``thread``: the baseline, each evaluation in one go in its worker thread (as before);
- ``off``: no detection at all;
- a suffix ``+siMS`` sets ``sys.setswitchinterval`` to MS milliseconds for that run;
  ``+cwMS`` sets the collector's commit window to MS milliseconds (default: its own, or
  ``--commit-window``); ``+peracks``: the agents ask for one ack per report, as agents did
  before (by default they ask for cumulative acks, as the real agent does); ``+gcN`` sets
  the cyclic GC's young-generation threshold to N allocations (CPython's default: 700;
  with ``+freeze``, the freezer's default is 20,000, see collector/gcfreeze.py);
  ``+freeze`` gives the enforcement a :class:`GcFreezer` (as the daemon does), which
  freezes what is alive after every evaluation (see collector/gcfreeze.py).

    .venv/bin/python bench/ack_lag.py --agents 2000 --duration 60 --variants thread,step,off
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet import agents

from gpuwarden.collector.enforce import attach_enforcement
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.server import Collector


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _task_ticks() -> dict[int, tuple[str, int]]:
    """(name, user+system clock ticks) of every thread of this process."""
    out: dict[int, tuple[str, int]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread has just ended
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (
            stat[stat.index("(") + 1 : stat.rindex(")")],
            int(fields[11]) + int(fields[12]),
        )
    return out


def _group(tid: int, comm: str, name: str | None) -> str:
    if tid == os.getpid():
        return "event loop"
    if name is None:  # a thread of gRPC's C core (event engine, timers)
        return "gRPC C threads"
    if "_poll_wrapper" in name:
        return "gRPC poller"
    if name.startswith("asyncio_"):
        return "to_thread pool"
    return name.rstrip("0123456789_")


class ThreadCpu:
    """CPU of this process by thread group, from /proc ticks sampled every second (a
    thread that ends between two samples loses its last second)."""

    def __init__(self) -> None:
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.group: dict[int, str] = {}

    def sample(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        started = bool(self.last)  # a thread first seen later started since
        for tid, (comm, ticks) in _task_ticks().items():
            if tid not in self.first:
                self.first[tid] = 0 if started else ticks
                self.group[tid] = _group(tid, comm, names.get(tid))
            self.last[tid] = ticks

    def split_s(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for tid, ticks in self.last.items():
            g = self.group[tid]
            out[g] = out.get(g, 0.0) + (ticks - self.first[tid]) * TICK_S
        return out

    async def forever(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(1.0)


def _process_ticks(pid: int | str) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


async def storm_cpu(pid: int, seconds: float) -> tuple[float, float]:
    """The share of a core this process and the agents' process ``pid`` used in their first
    ``seconds`` (the connect storm)."""
    mine, theirs, t0 = _process_ticks("self"), _process_ticks(pid), time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - t0
    return (
        (_process_ticks("self") - mine) * TICK_S / wall,
        (_process_ticks(pid) - theirs) * TICK_S / wall,
    )


class Probe:
    """What the collector's process does meanwhile: evaluation intervals (monotonic) and
    their CPU, and how late the event loop wakes from a 5 ms sleep."""

    def __init__(self) -> None:
        self.evaluations: list[tuple[float, float, float]] = []  # (start, end, CPU s)
        self.loop_late: list[tuple[float, float]] = []  # (when, how late)
        self.calls: dict[str, list[tuple[float, float, float]]] = {}  # name: [(start, wall, CPU)]
        self.collections: list[tuple[int, float, float]] = []  # (generation, start, end)
        self._gc_start = 0.0

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` entry: when each collection of the cyclic GC ran."""
        if phase == "start":
            self._gc_start = time.monotonic()
        else:
            self.collections.append((info["generation"], self._gc_start, time.monotonic()))

    def wall_cpu(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, its wall and CPU time of every call kept under ``name``."""
        calls = self.calls.setdefault(name, [])

        def wrapper(*a: Any, **kw: Any) -> Any:
            t0, c0 = time.monotonic(), time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                calls.append((t0, time.monotonic() - t0, time.thread_time() - c0))

        return wrapper

    def timed(self, evaluate: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t0, c0 = time.monotonic(), time.thread_time()
            try:
                return evaluate(*a, **kw)
            finally:
                self.evaluations.append((t0, time.monotonic(), time.thread_time() - c0))

        return wrapper

    async def loop_lateness(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.005)
            self.loop_late.append((t, time.monotonic() - t - 0.005))


SLOW_TX_S = 0.1
STORM_S = 5.0


def gc_freezer(young: int) -> Any:
    """Imported only when asked for: the baseline may be an older collector's sources.
    ``young``: the young-generation threshold it sets (0: its own default)."""
    from gpuwarden.collector.gcfreeze import GcFreezer

    return GcFreezer(young_threshold=young) if young else GcFreezer()


def _q(xs: list[float], p: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1] if len(xs) > 1 else xs[0]


async def run(args: argparse.Namespace, variant: str) -> str:
    probe, threads = Probe(), ThreadCpu()
    mode, *flags = variant.split("+")
    freeze = "freeze" in flags
    switch_ms = next((f[2:] for f in flags if f.startswith("si")), "")
    window_ms = next((f[2:] for f in flags if f.startswith("cw")), "")
    acks = "per-report" if "peracks" in flags else "cumulative"
    young = next((int(f[2:]) for f in flags if f.startswith("gc")), 0)
    default_thresholds = gc.get_threshold()
    if young:
        gc.set_threshold(young, *default_thresholds[1:])
    default_switch = sys.getswitchinterval()
    if switch_ms:
        sys.setswitchinterval(float(switch_ms) / 1000)
    with tempfile.TemporaryDirectory() as tmp:
        c = Collector(db_path=Path(tmp) / "bench.db", listen="127.0.0.1:0")
        if window_ms:
            c.ingestor.commit_window_s = float(window_ms) / 1000
        elif args.commit_window is not None:
            c.ingestor.commit_window_s = args.commit_window
        await c.start()
        if mode != "off":
            enforcer = attach_enforcement(
                c,
                policies=PolicySet(),
                executor=None,
                audit_jsonl=None,
                evaluate_interval_s=args.evaluate,
                **({"gc_freezer": gc_freezer(young)} if freeze else {}),
            )
            enforcer.evaluate = probe.timed(enforcer.evaluate)  # type: ignore[method-assign]
            if mode == "thread":  # before: the whole pass at once in the worker thread
                enforcer.pause = None
        c.store.write_reports = probe.wall_cpu("store transactions", c.store.write_reports)  # type: ignore[method-assign]
        c.jobstats.drain = probe.wall_cpu("job summaries", c.jobstats.drain)  # type: ignore[method-assign]
        if args.dump:  # when each report reached the collector's Python (the storm's time line)
            c.ingestor.submit = probe.wall_cpu("received", c.ingestor.submit)  # type: ignore[method-assign]
        c.add_background(probe.loop_lateness, "probe")
        c.add_background(threads.forever, "threads")
        await asyncio.sleep(0)
        gc.callbacks.append(probe.on_gc)
        cpu0, t0 = cpu_s(), time.perf_counter()
        argv = [f"127.0.0.1:{c.port}", str(args.agents), str(args.gpus), str(args.interval)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--as-agents", *argv, str(args.duration), acks,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        storm = asyncio.create_task(storm_cpu(proc.pid, STORM_S))
        out, _ = await proc.communicate()
        threads.sample()
        cpu, wall = cpu_s() - cpu0, time.perf_counter() - t0
        gc.callbacks.remove(probe.on_gc)
        gc.unfreeze()
        await c.stop()
    sys.setswitchinterval(default_switch)
    gc.set_threshold(*default_thresholds)
    if proc.returncode != 0:
        raise SystemExit(f"the agents' process failed ({proc.returncode})")
    result = json.loads(out.decode().splitlines()[-1])
    sends = result["lags"]
    lags = sorted(lag for _, lag in sends)
    if not lags:
        raise SystemExit("no acks")
    ended = Counter(e.split()[0] for e in result["ended"])
    before_first = sum(1 for e in result["ended"] if " 0 acks" in e)
    evals = probe.evaluations
    during = [lag for t, lag in sends if any(s <= t + lag and t <= e for s, e, _ in evals)]
    outside = [lag for t, lag in sends if not any(s <= t + lag and t <= e for s, e, _ in evals)]
    split = threads.split_s()
    late = [x for _, x in probe.loop_late]
    if args.dump:
        raw = {
            "sends": sends,
            "evals": evals,
            "late": probe.loop_late,
            "gc": probe.collections,
            "calls": probe.calls,
        }
        Path(f"{args.dump}.{variant}.json").write_text(json.dumps(raw))  # noqa: ASYNC240 (all done)
    first = min(t for t, _ in sends) + 2 * args.interval
    steady = sorted(lag for t, lag in sends if t >= first)
    ms = 1000.0
    lines = [
        f"{variant:>10} {len(lags):>6} {_q(lags, 50) * ms:>7.1f} {_q(lags, 99) * ms:>7.1f} "
        f"{lags[-1] * ms:>7.1f} {_q(steady, 99) * ms:>10.1f} {steady[-1] * ms:>10.1f} "
        f"{cpu / wall:>9.0%}   {dict(ended) or 'none'} ({before_first} before any ack)",
        "         CPU by thread, % of a core: "
        + ", ".join(f"{k} {v / wall:.0%}" for k, v in sorted(split.items(), key=lambda kv: -kv[1])),
        f"         first {STORM_S:.0f} s (connect storm): collector {storm.result()[0]:.0%} "
        f"of a core, the agents' process {storm.result()[1]:.0%}",
        f"         event loop late from a 5 ms sleep: p99 {_q(late, 99) * ms:.1f} ms, "
        f"max {max(late) * ms:.1f} ms",
    ]
    for name, calls in probe.calls.items():
        if calls:
            w = sorted(x for _, x, _ in calls)
            lines.append(
                f"         {name}: {len(calls)}, CPU {sum(c for _, _, c in calls) / wall:.0%} of "
                f"a core, wall p50 {_q(w, 50) * ms:.1f} ms, p99 {_q(w, 99) * ms:.1f} ms, "
                f"max {w[-1] * ms:.1f} ms"
            )
    for gen in (0, 1, 2):
        runs = [e - s for g, s, e in probe.collections if g == gen]
        if runs:
            lines.append(
                f"         GC generation {gen}: {len(runs)} collections, "
                f"{sum(runs) / wall:.1%} of the time, max {max(runs) * ms:.1f} ms"
            )
    full = [(s, e) for g, s, e in probe.collections if g == 2]
    behind_gc = [lag for t, lag in sends if any(s <= t + lag and t <= e for s, e in full)]
    if behind_gc:
        lines.append(
            f"         acks overlapping a full collection: {len(behind_gc)}, "
            f"p99 {_q(behind_gc, 99) * ms:.1f} ms, max {max(behind_gc) * ms:.1f} ms"
        )
    slow = [(t, t + w) for t, w, _ in probe.calls["store transactions"] if w > SLOW_TX_S]
    behind = [lag for t, lag in sends if any(s <= t + lag and t <= e for s, e in slow)]
    if behind:
        lines.append(
            f"         acks overlapping a store transaction over {SLOW_TX_S * ms:.0f} ms: "
            f"{len(behind)}, p99 {_q(behind, 99) * ms:.1f} ms, max {max(behind) * ms:.1f} ms"
        )
    if evals:
        walls = ", ".join(f"{e - s:.2f}" for s, e, _ in evals)
        cpus = ", ".join(f"{c:.2f}" for _, _, c in evals)
        lines.append(f"         {len(evals)} evaluations: wall {walls} s; CPU {cpus} s")
    if during and outside:
        lines.append(
            f"         acks overlapping an evaluation: {len(during)}, "
            f"p99 {_q(during, 99) * ms:.1f} ms, max {max(during) * ms:.1f} ms; "
            f"the others p99 {_q(outside, 99) * ms:.1f} ms, max {max(outside) * ms:.1f} ms"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--agents", type=int, default=2000)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of sending per run")
    ap.add_argument("--evaluate", type=float, default=15.0, help="rule evaluation interval, s")
    ap.add_argument("--commit-window", type=float, help="seconds (default: the collector's own)")
    ap.add_argument("--variants", default="thread,step,off", help="comma-separated, in order")
    ap.add_argument("--dump", help="write the raw figures to DUMP.VARIANT.json")
    ap.add_argument("--as-agents", nargs=6, help=argparse.SUPPRESS)  # the agents' process
    args = ap.parse_args()
    if args.as_agents:
        target, n, g, iv, d, acks = args.as_agents
        asyncio.run(agents(target, int(n), int(g), float(iv), float(d), acks))
        return
    print(
        f"{args.agents} agents x {args.gpus} GPUs every {args.interval:g} s, "
        f"{args.duration:g} s per run, one connection each"
    )
    print(
        f"{'variant':>10} {'acks':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'steady p99':>10} {'steady max':>10} {'collector':>9}   streams ended early"
    )
    for v in args.variants.split(","):
        print(asyncio.run(run(args, v)), flush=True)


if __name__ == "__main__":
    main()
