"""``gpuwarden demo``: a simulated cluster, end to end, on the embedded defaults.

A real collector (SQLite in a temporary folder, gRPC on loopback) and simulated nodes whose
agents stream over real gRPC. The screen is read back through the query API, exactly as the
dashboard does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.agent.runtime import Agent
from gpuwarden.agent.spool import Spool
from gpuwarden.collector.admin import attach_admin
from gpuwarden.collector.enforce import attach_enforcement
from gpuwarden.collector.policy import Policy, PolicySet
from gpuwarden.collector.server import Collector
from gpuwarden.common.address import connect_address
from gpuwarden.common.types import AuditRecord, ClusterSnapshot
from gpuwarden.query import QueryClient, cluster_view
from gpuwarden.query.format import fit_width, format_decisions, format_status
from gpuwarden.query.views import idle_job_ids
from gpuwarden.sim import DEFAULT_CHURN_PER_H, SimAttributor, SimSampler, sim_cluster


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
    listen: str = "127.0.0.1:0"
    churn_per_h: float = DEFAULT_CHURN_PER_H  # job ends per job slot per hour (tests: many)


def demo_policy(opts: DemoOptions) -> Policy:
    """Detection runs for real, in dry-run (nothing to enforce on simulated jobs), with
    windows short enough to show within a minute. ``gpuwarden replay`` of an exported demo
    run with this policy gives the demo's decisions."""
    return Policy(
        idle_window=opts.idle_window_s,
        grace_period=0.0,
        warnings=1,
        warn_interval=max(opts.idle_window_s, 10.0),
        underuse_window=max(4 * opts.idle_window_s, 60.0),
        window=opts.report_interval_s,
        max_gap=max(3 * opts.report_interval_s, 10.0),
        enforce=False,
    )


async def run_demo(opts: DemoOptions) -> int:
    tmp: str | None = None
    if opts.state_dir is None:
        tmp = tempfile.mkdtemp(prefix="gpuwarden-demo-")
        state_dir = Path(tmp)
    else:
        state_dir = opts.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
    interactive = opts.duration_s is None and sys.stdout.isatty()
    collector = Collector(
        db_path=state_dir / "gpuwarden.db",
        listen=opts.listen,
        audit_jsonl=state_dir / "audit.jsonl",  # admin actions from the dashboard
    )
    try:
        await collector.start()
    except OSError:  # e.g. --listen on a port in use: leave no temporary folder behind
        await collector.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    policies = PolicySet(default=demo_policy(opts))
    attach_enforcement(
        collector,
        policies=policies,
        reorder_s=2 * opts.report_interval_s,
        executor=None,
        audit_jsonl=state_dir / "audit.jsonl",
        evaluate_interval_s=1.0,
        actor="gpuwarden-demo",
    )
    # The dashboard's action keys work on the demo too: dry-run, recorded as "local".
    attach_admin(collector, policies=policies, executor=None)
    target = connect_address(opts.listen, collector.port)
    agents: list[Agent] = []
    for sim in sim_cluster(
        opts.nodes, gpus=opts.gpus_per_node, seed=opts.seed, churn=opts.churn_per_h
    ):
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
    snap = ClusterSnapshot(now=time.time())
    audit: list[AuditRecord] = []
    width = fit_width(shutil.get_terminal_size((100, 24)).columns)
    seen: list[tuple[ClusterSnapshot, list[AuditRecord]]] = []  # the table's newest
    try:
        if not (interactive and await _dashboard(target)):
            await _table(opts, target, started, interactive, width, seen)
        async with QueryClient(target) as client:
            snap = await client.snapshot()  # while the agents still run: the cluster as it was
            audit = await client.audit(limit=10_000)
    except (KeyboardInterrupt, asyncio.CancelledError):
        if seen:
            snap, audit = seen[-1]
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.5)  # let the last acks arrive
        windows_stored = snap.windows_stored
        with contextlib.suppress(Exception):
            async with QueryClient(target) as client:
                windows_stored = (await client.snapshot()).windows_stored
        stats = [a.stats() for a in agents]
        await collector.stop()
    idle = idle_job_ids(audit)
    print(format_status(cluster_view(snap), width=width, idle_jobs=idle))
    for line in format_decisions(audit[:10], width=width):
        print(line)
    produced = sum(s.reports for s in stats)
    print(
        f"summary: nodes {len(snap.nodes)}, GPUs {sum(len(n.gpus) for n in snap.nodes)}, "
        f"reports produced {produced}, reports stored {collector.ingestor.stored}, "
        f"windows stored {windows_stored}, unacknowledged {sum(s.spooled for s in stats)}, "
        f"idle allocations seen {len(idle)}, audit records {len(audit)} (dry-run)"
    )
    if tmp is not None and not os.environ.get("GPUWARDEN_DEMO_KEEP"):
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


async def _dashboard(target: str) -> bool:
    """``gpuwarden top`` on the demo's collector until the user quits; False when Textual
    is not installed (the demo then prints its table)."""
    try:
        from gpuwarden.tui.app import TopApp
    except ImportError:
        return False
    from gpuwarden.query.config import ClientConfig

    logging.disable(logging.WARNING)  # log lines on stderr would tear the screen
    try:
        await TopApp(ClientConfig(collector=target, insecure=True)).run_async()
    finally:
        logging.disable(logging.NOTSET)
    return True


async def _table(
    opts: DemoOptions,
    target: str,
    started: float,
    interactive: bool,
    width: int,
    seen: list[tuple[ClusterSnapshot, list[AuditRecord]]],
) -> None:
    """The plain table every ``refresh_s`` (a terminal without Textual), or nothing but the
    wait (``--duration``, no terminal); the newest answers go to ``seen``."""
    async with QueryClient(target) as client:
        while opts.duration_s is None or time.monotonic() - started < opts.duration_s:
            await asyncio.sleep(opts.refresh_s)
            if not interactive:
                continue
            snap = await client.snapshot()
            audit = await client.audit(limit=10_000)
            seen[:] = [(snap, audit)]
            table = format_status(cluster_view(snap), width=width, idle_jobs=idle_job_ids(audit))
            sys.stdout.write("\x1b[2J\x1b[H" + table + "\n")
            for line in format_decisions(audit[:8], width=width):
                sys.stdout.write(line + "\n")
            sys.stdout.write("Ctrl-C to stop\n")
            sys.stdout.flush()
