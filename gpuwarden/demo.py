"""``gpuwarden demo``: a simulated cluster, end to end, on the embedded defaults.

A real collector (SQLite in a temporary folder, gRPC on loopback) and simulated nodes whose
agents stream over real gRPC. The screen is read back through the query API, exactly as the
dashboard does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.agent.runtime import Agent
from gpuwarden.agent.spool import Spool
from gpuwarden.collector.enforce import attach_enforcement
from gpuwarden.collector.policy import Policy, PolicySet
from gpuwarden.collector.server import Collector
from gpuwarden.common.query import QueryClient
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.sim import SimAttributor, SimSampler, sim_cluster

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class DemoOptions:
    nodes: int = 16
    gpus_per_node: int = 4
    duration_s: float | None = None
    seed: int = 0
    state_dir: Path | None = None
    sample_interval_s: float = 1.0
    report_interval_s: float = 2.0
    refresh_s: float = 2.0
    idle_window_s: float = 20.0


def _gpu_cell(g: pb.GpuState) -> str:
    w = g.latest
    util = f"{w.util_max:3.0f}%" if w.HasField("util_max") else "  ?%"
    mem = f"{w.mem_used_max_bytes / GIB:4.1f}G" if w.HasField("mem_used_max_bytes") else "   ?G"
    if w.errors:
        return f"{'LOST' if 'gpu_lost' in w.errors else 'ERR':<26}"
    if not w.HasField("job"):
        return f"{util} {mem} {'(free)':<15}"
    owner = f"{w.job.job_id}/{w.job.user}"[:12]
    flag = " "
    if not w.processes:
        flag = "!"  # allocated, nothing running on it
    elif w.util_max < 5:
        flag = "~"
    return f"{util} {mem} {flag}{owner:<14}"


def format_cluster(snap: pb.ClusterSnapshot, idle_jobs: set[str] | None = None) -> str:
    lines = [
        f"{'node':<10} {'conn':<5} {'slurm':<6} GPUs (max util, peak mem, job/user; "
        "! allocated but empty, ~ idle now)"
    ]
    gpus = busy = empty = 0
    for n in snap.nodes:
        cells = []
        for g in n.gpus:
            gpus += 1
            if g.latest.HasField("job"):
                if not g.latest.processes:
                    empty += 1
                elif g.latest.util_max >= 5:
                    busy += 1
            cells.append(_gpu_cell(g))
        slurm = "ok" if n.slurm.available else "DOWN"
        lines.append(
            f"{n.node:<10} {'yes' if n.connected else 'no':<5} {slurm:<6} " + " | ".join(cells)
        )
    lines.append(
        f"nodes {len(snap.nodes)}  GPUs {gpus}  busy {busy}  allocated-but-empty {empty}  "
        f"windows stored {snap.windows_stored}"
        + (f"  idle allocations {len(idle_jobs)}" if idle_jobs is not None else "")
    )
    return "\n".join(lines)


def idle_job_ids(audit: list[pb.AuditRecord]) -> set[str]:
    return {
        r.job_id
        for r in audit
        if r.kind == "idle" and r.action != "none" and not r.detail.startswith("partly")
    }


def format_audit(records: list[pb.AuditRecord]) -> list[str]:
    out = ["latest decisions (newest first):"] if records else []
    for r in records:
        when = time.strftime("%H:%M:%S", time.localtime(r.ts))
        out.append(f"  {when} job {r.job_id:<8} {r.kind:<9} {r.action:<8} {r.detail[:90]}")
    return out


async def run_demo(opts: DemoOptions) -> int:
    tmp: str | None = None
    if opts.state_dir is None:
        tmp = tempfile.mkdtemp(prefix="gpuwarden-demo-")
        state_dir = Path(tmp)
    else:
        state_dir = opts.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
    interactive = opts.duration_s is None and sys.stdout.isatty()
    collector = Collector(db_path=state_dir / "gpuwarden.db", listen="127.0.0.1:0")
    await collector.start()
    # Detection runs for real, in dry-run (nothing to enforce on simulated jobs), with
    # windows short enough to show within a minute.
    policy = Policy(
        idle_window=opts.idle_window_s,
        grace_period=0.0,
        warnings=1,
        warn_interval=max(opts.idle_window_s, 10.0),
        underuse_window=max(4 * opts.idle_window_s, 60.0),
        window=opts.report_interval_s,
        max_gap=max(3 * opts.report_interval_s, 10.0),
        enforce=False,
    )
    attach_enforcement(
        collector,
        policies=PolicySet(default=policy),
        executor=None,
        audit_jsonl=state_dir / "audit.jsonl",
        evaluate_interval_s=1.0,
        actor="gpuwarden-demo",
    )
    target = f"127.0.0.1:{collector.port}"
    agents: list[Agent] = []
    for sim in sim_cluster(opts.nodes, gpus=opts.gpus_per_node, seed=opts.seed):
        name = sim.node
        agents.append(
            Agent(
                node=name,
                sampler=SimSampler(sim),
                attributor=SimAttributor(sim),
                spool=Spool(state_dir / "spool" / name),
                collector=target,
                sample_interval_s=opts.sample_interval_s,
                report_interval_s=opts.report_interval_s,
            )
        )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(a.run(stop), name=f"agent-{a.node}") for a in agents]
    print(
        f"gpuwarden demo: collector on {target}, {opts.nodes} simulated nodes x "
        f"{opts.gpus_per_node} GPUs, state in {state_dir}"
        + ("" if opts.duration_s is None else f", running {opts.duration_s:g} s"),
        flush=True,
    )
    started = time.monotonic()
    snap = pb.ClusterSnapshot()
    audit: list[pb.AuditRecord] = []
    try:
        async with QueryClient(target) as client:
            while opts.duration_s is None or time.monotonic() - started < opts.duration_s:
                await asyncio.sleep(opts.refresh_s)
                snap = await client.snapshot()
                audit = list((await client.audit(limit=10_000)).records)
                if interactive:
                    sys.stdout.write(
                        "\x1b[2J\x1b[H" + format_cluster(snap, idle_job_ids(audit)) + "\n"
                    )
                    for line in format_audit(audit[:8]):
                        sys.stdout.write(line + "\n")
                    sys.stdout.write("Ctrl-C to stop\n")
                    sys.stdout.flush()
            snap = await client.snapshot()
            audit = list((await client.audit(limit=10_000)).records)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.5)  # let the last acks arrive
        with contextlib.suppress(Exception):
            async with QueryClient(target) as client:
                snap = await client.snapshot()
        stats = [a.stats() for a in agents]
        await collector.stop()
    idle = idle_job_ids(audit)
    print(format_cluster(snap, idle))
    for line in format_audit(audit[:10]):
        print(line)
    produced = sum(s.reports for s in stats)
    print(
        f"summary: nodes {len(snap.nodes)}, GPUs {sum(len(n.gpus) for n in snap.nodes)}, "
        f"reports produced {produced}, reports stored {collector.ingestor.stored}, "
        f"windows stored {snap.windows_stored}, unacknowledged {sum(s.spooled for s in stats)}, "
        f"idle allocations seen {len(idle)}, audit records {len(audit)} (dry-run)"
    )
    if tmp is not None and not os.environ.get("GPUWARDEN_DEMO_KEEP"):
        shutil.rmtree(tmp, ignore_errors=True)
    return 0
