#!/usr/bin/env python3
"""Slurm controller RPCs per agent-minute: the old attribution query against today's.

Needs root and a running Slurm (``SLURM_CONF`` set, e.g. the test cluster of
``scripts/slurm-up.sh``). Submits ``--jobs`` sleeping GPU jobs named ``gw-bench-rpc-*`` on this
node (cancelled at the end), then, with ``sdiag --reset`` before each phase, counts the RPCs
slurmctld received by type:

* before: what the agent did until now, ``scontrol -d -o show job`` every ``cache_ttl_s``
  (10 s), i.e. ``60 / 10`` runs per agent-minute;
* after: ``SlurmAttributor.attribute()`` called every report (5 s) over ``--minutes`` simulated
  minutes (a clock the bench advances; the Slurm commands and /proc reads are real), with one
  more job starting half way through.

sdiag counts every client's RPCs, so run it while nothing else uses the controller. Prints
the per-agent-minute figures and what ``--nodes`` agents would send.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter

from gpuwarden.agent.slurm_attr import SlurmAttributor
from gpuwarden.common.types import GpuSample
from gpuwarden.slurm import PyslurmClient, make_slurm_client

_RPC_RE = re.compile(r"^\s+([A-Z_]+)\s+\(\s*\d+\)\s+count:(\d+)", re.MULTILINE)
_COUNTED = ("REQUEST_STATS_INFO", "REQUEST_RESET_STATS")  # sdiag's own


def sdiag_reset() -> None:
    subprocess.run(["sdiag", "--reset"], check=True, capture_output=True, timeout=30)


def sdiag_rpcs() -> Counter[str]:
    text = subprocess.run(["sdiag"], check=True, capture_output=True, text=True, timeout=30).stdout
    section = text.split("Remote Procedure Call statistics by message type", 1)[-1]
    section = section.split("Remote Procedure Call statistics by user", 1)[0]
    return Counter({k: int(v) for k, v in _RPC_RE.findall(section) if k not in _COUNTED})


def submit(name: str) -> str:
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--output=/dev/null",
            "-J",
            name,
            "--gres=gpu:1",
            "--wrap",
            "sleep 900",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip().split(";")[0]


def wait_running(job_ids: list[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        if sum(" RUNNING" in ln for ln in out.splitlines()) == len(job_ids):
            return
        time.sleep(0.3)
    raise SystemExit(f"jobs {job_ids} did not start within 60 s")


# What a query of job facts can send (measured on 22.05: squeue --json = JOB_INFO;
# scontrol -d -o show job = JOB_INFO + NODE_INFO; for one job: JOB_INFO_SINGLE + FED_INFO +
# NODE_INFO or PARTITION_INFO). Anything else (submits, kills, epilogs) is another client's.
_QUERIES = frozenset(
    {
        "REQUEST_JOB_INFO",
        "REQUEST_JOB_INFO_SINGLE",
        "REQUEST_NODE_INFO",
        "REQUEST_PARTITION_INFO",
        "REQUEST_FED_INFO",
        "REQUEST_PING",  # the pyslurm backend pings before each query
    }
)


def show(label: str, seen: Counter[str], minutes: float, nodes: int) -> float:
    rpcs = Counter({k: v for k, v in seen.items() if k in _QUERIES})
    others = sorted(k for k in seen if k not in _QUERIES)
    if others:
        print(f"{label}: not counted (other clients of this controller): {', '.join(others)}")
    total = sum(rpcs.values())
    per_min = total / minutes
    kinds = ", ".join(f"{k} {v / minutes:.1f}" for k, v in sorted(rpcs.items()))
    print(f"{label}: {per_min:.2f} RPC per agent-minute ({kinds})")
    print(
        f"{label}: {nodes} agents -> {per_min * nodes:,.0f} RPC/min ({per_min * nodes / 60:,.1f}/s)"
    )
    return per_min


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="GPU jobs on the node (default 2)")
    ap.add_argument("--minutes", type=float, default=10.0, help="simulated minutes (after)")
    ap.add_argument("--nodes", type=int, default=1000, help="cluster size for the estimate")
    ap.add_argument(
        "--backend",
        choices=("cli", "pyslurm"),
        default="cli",
        help="how the agent lists its node's jobs: squeue --json (cli) or pyslurm (needs a "
        "pyslurm matching the Slurm)",
    )
    args = ap.parse_args()
    if os.geteuid() != 0 or not os.environ.get("SLURM_CONF"):
        print("needs root and SLURM_CONF (sdiag --reset is an operator command)", file=sys.stderr)
        return 2
    node = socket.gethostname().split(".")[0]
    jobs = [submit(f"gw-bench-rpc-{i}") for i in range(args.jobs)]
    try:
        wait_running(jobs)
        sdiag_reset()
        for _ in range(6):  # one agent-minute of the old query
            subprocess.run(
                ["scontrol", "-d", "-o", "show", "job"], capture_output=True, timeout=30, check=True
            )
        before = show("before (scontrol -d -o show job every 10 s)", sdiag_rpcs(), 1.0, args.nodes)

        now = [1000.0]
        source = None
        if args.backend == "pyslurm":
            client = make_slurm_client("pyslurm", timeout_s=10.0)
            assert isinstance(client, PyslurmClient)
            source = functools.partial(client.node_jobs, node)
        attributor = SlurmAttributor(
            node, cache_ttl_s=10.0, timeout_s=10.0, clock=lambda: now[0], jobs_source=source
        )
        samples = [GpuSample(uuid=f"GPU-{i}", index=i) for i in range(4)]
        reports = int(args.minutes * 60 / 5)
        sdiag_reset()
        counted: Counter[str] = Counter()
        for i in range(reports):
            if i == reports // 2:  # a new job starts on the node half way through
                counted += sdiag_rpcs()  # (the bench's own sbatch and squeue not counted)
                late = submit("gw-bench-rpc-late")
                jobs.append(late)
                wait_running([late])
                sdiag_reset()
            attributor.attribute(samples)
            now[0] += 5.0
        rpcs = counted + sdiag_rpcs()
        how = "squeue --json" if source is None else "pyslurm ping + job info"
        after = show(
            f"after ({how} on demand, refresh {attributor.refresh_s:g} s)",
            rpcs,
            args.minutes,
            args.nodes,
        )
        own = attributor.runner.calls / args.minutes
        print(
            f"the agent ran squeue --json {attributor.runner.calls} times in {args.minutes:g} "
            f"agent-minutes: {own:.2f} REQUEST_JOB_INFO per agent-minute of its own "
            f"(sdiag saw {rpcs['REQUEST_JOB_INFO'] / args.minutes:.2f}); "
            f"{args.nodes} agents -> {own * args.nodes:,.0f} RPC/min"
        )
        print(
            f"squeue runs: {attributor.runner.calls} in {args.minutes:g} agent-minutes; "
            f"RPCs per agent-minute {before:.1f} -> {after:.2f} "
            f"({before / max(after, 1e-9):.0f}x fewer)"
        )
    finally:
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=30, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
