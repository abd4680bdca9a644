#!/usr/bin/env python3
"""Soak: N agents for a long while against one collector; CPU, RSS over time and ack lag.

The collector runs as its own process, started as users start it (``gpuwarden collector
--config FILE``: SQLite in a temporary folder, plaintext gRPC, detection on with the
default policy in dry run, no Slurm). A second process runs ``--agents`` agent streams,
each on its own TCP connection, each sending one report of ``--gpus`` GPUs every
``--interval`` seconds (phases spread evenly). Jobs come and go as on a real cluster: a
free GPU gets a new job (1, 2 or 4 GPUs, a new job id, a start time, one of 200 users)
after a report or two; a job runs for an exponentially distributed time of mean
``--job-mean`` seconds; a third of the jobs leave their GPUs idle (``--job-mean 0``: the
jobs of ack_lag.py, one per GPU that never ends).

Every ``--every`` seconds it prints: elapsed time, the collector's CPU (% of one core, over
that interval), its RSS, the ack lag (send to ack = durably stored) p50/p99/max of that
interval, the windows stored (from the query API's snapshot, as a dashboard asks), the
sizes of the database and of its write-ahead log, and the 1-minute load average of the
machine. At the end: the RSS slope after ``--warmup`` (least squares, MiB/min) and the
whole run's figures.

``--diagnose FILE`` runs the collector under a small wrapper (the same ``gpuwarden
collector`` entry point, in the same kind of process) that writes to FILE every
``--every`` seconds what grows: the collector's containers by owner (their lengths, summed
over e.g. every job run's tracker), glibc's heap (mallinfo2: in use, free in the arenas,
mmapped), SQLite's own memory and, with ``--tracemalloc``, the allocation sites that grew
most since the first look after warm-up. ``--trim`` calls ``malloc_trim(0)`` there before
each look (RSS kept only by free heap pages then goes back), and ``--arena-max N`` sets
``MALLOC_ARENA_MAX`` for the collector: both tell fragmentation apart from live objects.

    .venv/bin/python bench/soak.py --agents 1000 --duration 600
    .venv/bin/python bench/soak.py --agents 300 --duration 180 --job-mean 60 \\
        --diagnose soak-diag.txt --tracemalloc
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

# The agents' side is ack_lag.py's too: fleet.py's report template and stream loop.
from fleet import one_agent

from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc

USERS = 200
JOB_SIZES = (1, 1, 2, 4)
IDLE_SHARE = 1 / 3


# -- the agents' process ------------------------------------------------------------------
@dataclass(slots=True)
class _Job:
    job_id: str
    user: str
    start: int
    end: float
    idle: bool


@dataclass(slots=True)
class NodeJobs:
    """The jobs on one node's GPUs as time goes on: ``apply(msg, now)`` sets each GPU's job
    (or none) in the report about to be sent."""

    node_no: int
    gpus: int
    job_mean_s: float
    rng: random.Random
    slots: list[_Job | None] = field(default_factory=list)
    free_until: list[float] = field(default_factory=list)
    jobs_started: int = 0

    def __post_init__(self) -> None:
        self.slots = [None] * self.gpus
        self.free_until = [0.0] * self.gpus

    def _new_job(self, now: float) -> _Job:
        self.jobs_started += 1
        return _Job(
            job_id=str(self.node_no * 1_000_000 + self.jobs_started),
            user=f"u{self.rng.randrange(USERS):03d}",
            start=int(now),
            end=now + max(30.0, self.rng.expovariate(1.0 / self.job_mean_s)),
            idle=self.rng.random() < IDLE_SHARE,
        )

    def _churn(self, now: float) -> None:
        for i, job in enumerate(self.slots):
            if job is not None and now >= job.end:
                self.slots[i] = None
                self.free_until[i] = now + self.rng.uniform(0.0, 10.0)  # a report or two
        ready = [i for i, j in enumerate(self.slots) if j is None and now >= self.free_until[i]]
        while ready:
            size = min(len(ready), self.rng.choice(JOB_SIZES))
            job = self._new_job(now)
            for i in ready[:size]:
                self.slots[i] = job
            ready = ready[size:]

    def apply(self, msg: pb.NodeReport, now: float) -> None:
        self._churn(now)
        for g, job in zip(msg.gpus, self.slots, strict=True):
            if job is None:
                g.ClearField("job")
                g.allocated = False
                g.util_mean, g.util_max = 0.0, 0.0
                continue
            g.allocated = True
            j = g.job
            if j.job_id != job.job_id:
                j.job_id, j.user, j.account, j.start_time = job.job_id, job.user, "acct", job.start
                j.partition = "gpu"
            g.util_mean, g.util_max = (0.0, 0.0) if job.idle else (60.0, 95.0)


async def agents(
    target: str, n: int, gpus: int, interval: float, duration: float, every: float, mean: float
) -> None:
    """N agent streams; prints one JSON line every ``every`` s with the lags acked since the
    last line, and the streams that ended early."""
    until = time.monotonic() + duration
    rng = random.Random(13)
    lags: list[list[tuple[float, float]]] = [[] for _ in range(n)]  # (send time, lag)
    ended: list[list[str]] = [[] for _ in range(n)]
    nodes = [NodeJobs(i, gpus, mean, random.Random(rng.random())) for i in range(n)]
    tasks = [
        asyncio.create_task(
            one_agent(
                target,
                f"n{i:05d}",
                gpus,
                interval,
                interval * i / n,
                until,
                prepare=nodes[i].apply if mean > 0 else None,
                lags=lags[i],
                ended=ended[i],
            )
        )
        for i in range(n)
    ]
    seen_lags = [0] * n
    seen_ended = [0] * n

    def flush() -> None:
        out: list[float] = []
        early: list[str] = []
        for i in range(n):
            out += [lag for _, lag in lags[i][seen_lags[i] :]]
            seen_lags[i] = len(lags[i])
            early += ended[i][seen_ended[i] :]
            seen_ended[i] = len(ended[i])
        jobs = sum(x.jobs_started for x in nodes)
        print(json.dumps({"lags": out, "ended": early, "jobs": jobs}), flush=True)

    done = asyncio.gather(*tasks)
    while not done.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), timeout=every)
        flush()
    await done


# -- the collector's process, under the --diagnose wrapper ----------------------------------
def run_collector_diagnosed(
    config: str, out: str, every: float, warmup: float, trace: bool, trim: bool
) -> int:
    """``gpuwarden collector --config CONFIG`` with a thread that writes to ``out`` what the
    process holds, every ``every`` seconds."""
    import threading

    if trace:
        import tracemalloc

        tracemalloc.start(1)
    from diagnose import Looker

    looker = Looker(Path(out), trace=trace, trim=trim, baseline_after_s=warmup)
    threading.Thread(target=looker.forever, args=(every,), daemon=True).start()
    from gpuwarden.cli import main as gpuwarden_main

    return gpuwarden_main(["collector", "--config", config])


# -- the driver ------------------------------------------------------------------------------
def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def loadavg() -> tuple[float, float, float]:
    a, b, c = Path("/proc/loadavg").read_text().split()[:3]
    return float(a), float(b), float(c)


def slope_mib_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB), in MiB per minute."""
    if len(points) < 2:
        return float("nan")
    return statistics.linear_regression([t for t, _ in points], [m for _, m in points])[0] * 60


def quantiles_ms(lags: list[float]) -> tuple[float, float, float]:
    if len(lags) < 2:
        return (float("nan"),) * 3  # type: ignore[return-value]
    q = statistics.quantiles(lags, n=100, method="inclusive")
    return q[49] * 1000, q[98] * 1000, max(lags) * 1000


def write_config(tmp: Path, evaluate_s: float, grace_s: float | None) -> Path:
    cfg = tmp / "collector.toml"
    policy = "" if grace_s is None else f"\n[policy]\ngrace_period = {grace_s}\n"
    cfg.write_text(
        "[collector]\n"
        'listen = "127.0.0.1:0"\n'
        f'state_dir = "{tmp}"\n'
        "insecure = true\n"
        'slurm_backend = "none"\n'
        f"evaluate_interval = {evaluate_s}\n" + policy
    )
    return cfg


async def windows_stored(target: str) -> int | None:
    """As a dashboard asks: the query API's snapshot (the whole cluster)."""
    try:
        async with grpc.aio.insecure_channel(target) as ch:
            snap = await pb_grpc.QueryServiceStub(ch).GetSnapshot(pb.SnapshotRequest(), timeout=20)
        return int(snap.windows_stored)
    except grpc.aio.AioRpcError:
        return None


async def start_collector(
    args: argparse.Namespace, tmp: Path
) -> tuple[asyncio.subprocess.Process, int]:
    cfg = write_config(tmp, args.evaluate, args.grace)
    env = dict(os.environ)
    if args.arena_max:
        env["MALLOC_ARENA_MAX"] = str(args.arena_max)
    if args.diagnose:
        cmd = [sys.executable, __file__, "--as-collector", str(cfg), args.diagnose]
        cmd += [str(args.every), str(args.warmup)]
        cmd += ["--tracemalloc"] * args.tracemalloc + ["--trim"] * args.trim
    else:
        cmd = [sys.executable, "-m", "gpuwarden", "collector", "--config", str(cfg)]
    log = (tmp / "collector.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=log, env=env
    )
    assert proc.stdout is not None
    while line := (await asyncio.wait_for(proc.stdout.readline(), 60)).decode():
        if line.startswith("collector listening on port"):
            return proc, int(line.split()[-1])
    raise SystemExit("the collector did not start:\n" + (tmp / "collector.log").read_text()[-3000:])


async def drive(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        collector, port = await start_collector(args, tmp)
        try:
            await measure(args, collector, f"127.0.0.1:{port}", tmp / "gpuwarden.db")
        finally:
            if collector.returncode is None:
                collector.send_signal(signal.SIGTERM)
                await collector.wait()


@dataclass(slots=True)
class Soak:
    """What the rows saw."""

    rss: list[tuple[float, float]] = field(default_factory=list)  # (elapsed s, MiB)
    cpu_pct: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    jobs: int = 0


def file_mib(path: Path) -> float:
    try:
        return path.stat().st_size / (1 << 20)
    except FileNotFoundError:
        return 0.0


async def rows(
    collector: asyncio.subprocess.Process,
    target: str,
    agents_out: asyncio.StreamReader,
    db: Path,
) -> Soak:
    """One row per line of the agents' process (one every --every seconds)."""
    print(
        f"{'elapsed':>7} {'CPU %':>6} {'RSS MiB':>8} {'p50 ms':>7} {'p99 ms':>8} "
        f"{'max ms':>8} {'acks':>6} {'windows':>10} {'jobs':>7} {'db MiB':>7} {'WAL MiB':>7} "
        f"{'load1':>6}"
    )
    soak = Soak()
    t0 = time.monotonic()
    cpu_prev, t_prev = proc_cpu_s(collector.pid), t0
    async for raw in agents_out:
        row = json.loads(raw)
        lags: list[float] = row["lags"]
        soak.ended += row["ended"]
        soak.jobs = row["jobs"]
        soak.lags += lags
        now = time.monotonic()
        cpu = proc_cpu_s(collector.pid)
        soak.cpu_pct.append((cpu - cpu_prev) / (now - t_prev) * 100)
        cpu_prev, t_prev = cpu, now
        soak.rss.append((now - t0, proc_rss_mib(collector.pid)))
        stored = await windows_stored(target)
        soak.loads.append(loadavg()[0])
        p50, p99, mx = quantiles_ms(lags)
        print(
            f"{now - t0:>7.0f} {soak.cpu_pct[-1]:>6.1f} {soak.rss[-1][1]:>8.1f} {p50:>7.1f} "
            f"{p99:>8.1f} {mx:>8.1f} {len(lags):>6} {stored if stored is not None else '?':>10} "
            f"{soak.jobs:>7} {file_mib(db):>7.0f} {file_mib(db.with_name(db.name + '-wal')):>7.1f} "
            f"{soak.loads[-1]:>6.2f}",
            flush=True,
        )
    return soak


async def measure(
    args: argparse.Namespace, collector: asyncio.subprocess.Process, target: str, db: Path
) -> None:
    load0 = loadavg()
    argv = [target, str(args.agents), str(args.gpus), str(args.interval), str(args.duration)]
    argv += [str(args.every), str(args.job_mean)]
    agents_proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--as-agents", *argv, stdout=asyncio.subprocess.PIPE,
        limit=64 << 20,  # one line carries an interval's lags
    )  # fmt: skip
    assert agents_proc.stdout is not None
    print(
        f"{args.agents} agents x {args.gpus} GPUs every {args.interval:g} s for "
        f"{args.duration:g} s, jobs of mean {args.job_mean:g} s; collector pid {collector.pid}"
        f"{' (diagnosed: ' + args.diagnose + ')' if args.diagnose else ''}"
    )
    try:
        soak = await rows(collector, target, agents_proc.stdout, db)
    finally:
        if agents_proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                agents_proc.kill()
        await agents_proc.wait()
    stored = await windows_stored(target)
    load_end = loadavg()
    # the last row may come after the agents stopped sending: not part of the slope
    after = [(t, m) for t, m in soak.rss if args.warmup <= t <= args.duration + 1]
    p50, p99, mx = quantiles_ms(soak.lags)
    print(
        f"RSS after warm-up ({args.warmup:g} s): {min(m for _, m in after):.1f}-"
        f"{max(m for _, m in after):.1f} MiB, slope {slope_mib_per_min(after):+.2f} MiB/min "
        f"over {len(after)} points"
        if after
        else "RSS: no point after the warm-up"
    )
    cpu = statistics.fmean(soak.cpu_pct) if soak.cpu_pct else float("nan")
    print(
        f"collector CPU {cpu:.1f} % of a core (mean of the rows); acks {len(soak.lags)}: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {mx:.1f} ms; windows stored {stored}; "
        f"jobs started {soak.jobs}"
    )
    kinds = Counter(e.split()[0] for e in soak.ended)
    print(f"streams ended early: {dict(kinds) or 'none'}")
    print(
        f"load average at start {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, at the end "
        f"{load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f} (1/5/15 min), 1-min mean "
        f"during the run {statistics.fmean(soak.loads) if soak.loads else float('nan'):.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    if agents_proc.returncode != 0:
        raise SystemExit(f"the agents' process failed ({agents_proc.returncode})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--interval", type=float, default=5.0, help="report interval, s")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of sending")
    ap.add_argument("--every", type=float, default=30.0, help="seconds between rows")
    ap.add_argument("--warmup", type=float, default=180.0, help="s left out of the RSS slope")
    ap.add_argument(
        "--job-mean",
        type=float,
        default=600.0,
        help="mean job length, s; 0: ack_lag.py's jobs, one per GPU for the whole run, "
        "start time unknown (no grace period)",
    )
    ap.add_argument("--evaluate", type=float, default=15.0, help="rule evaluation interval, s")
    ap.add_argument(
        "--grace", type=float, help="the policy's grace_period, s (default: the default policy's)"
    )
    ap.add_argument("--diagnose", metavar="FILE", help="write what the collector holds to FILE")
    ap.add_argument("--tracemalloc", action="store_true", help="with --diagnose: top growth")
    ap.add_argument("--trim", action="store_true", help="with --diagnose: malloc_trim first")
    ap.add_argument("--arena-max", type=int, default=0, help="MALLOC_ARENA_MAX of the collector")
    ap.add_argument("--as-agents", nargs=7, help=argparse.SUPPRESS)
    ap.add_argument("--as-collector", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.as_agents:
        t, n, g, iv, d, ev, mean = args.as_agents
        asyncio.run(agents(t, int(n), int(g), float(iv), float(d), float(ev), float(mean)))
        return
    if args.as_collector:
        cfg, out, ev, wu = args.as_collector
        raise SystemExit(
            run_collector_diagnosed(cfg, out, float(ev), float(wu), args.tracemalloc, args.trim)
        )
    asyncio.run(drive(args))


if __name__ == "__main__":
    main()
