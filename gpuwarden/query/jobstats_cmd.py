"""``gpuwarden jobstats JOBID`` and ``gpuwarden report``: readers of the query API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from gpuwarden.query.client import QueryClient
from gpuwarden.query.commands import (
    add_client_options,
    client_config,
    job_arg,
    run_reader,
    since_arg,
)
from gpuwarden.query.jobstats_format import format_jobstats, format_waste, jobstats_json, waste_csv
from gpuwarden.query.since import HELP as SINCE_HELP


def _use_color(args: argparse.Namespace) -> bool:
    return not args.no_color and not os.environ.get("NO_COLOR") and sys.stdout.isatty()


def jobstats_main(args: argparse.Namespace) -> int:
    cfg = client_config(args)

    async def go() -> int:
        async with QueryClient.from_config(cfg) as client:
            stats = await client.job_stats(args.jobid)
        if stats is None:
            print(
                f"gpuwarden jobstats: the collector knows no job {args.jobid} "
                "(or it is not yours to see)",
                file=sys.stderr,
            )
            return 1
        if args.json:
            print(json.dumps(jobstats_json(stats), sort_keys=True, default=str))
        else:
            print(format_jobstats(stats, color=_use_color(args)))
        return 0

    return run_reader("jobstats", cfg, go)


def add_jobstats_parser(sub: Any) -> None:
    j: argparse.ArgumentParser = sub.add_parser(
        "jobstats",
        help="how a job used its GPUs, with advice",
        description="A job's facts, per node and GPU the mean and peak utilisation, peak "
        "memory, mean power and idle periods, CPU efficiency, advice, and the warnings and "
        "actions about it. Works for running jobs and, from the stored summary, for ended "
        "ones. Researchers see their own jobs only. Exits 1 when the job is unknown.",
    )
    j.add_argument("jobid", type=job_arg, metavar="JOBID")
    j.add_argument("--json", action="store_true", help="one JSON object")
    j.add_argument("--no-color", action="store_true", help="no colours (also: NO_COLOR set)")
    add_client_options(j)
    j.set_defaults(func=jobstats_main)


def report_main(args: argparse.Namespace) -> int:
    cfg = client_config(args)

    async def go() -> int:
        async with QueryClient.from_config(cfg) as client:
            rows = await client.waste_report(args.since)
        sys.stdout.write(waste_csv(rows) if args.csv else format_waste(rows, args.since) + "\n")
        return 0

    return run_reader("report", cfg, go)


def add_report_parser(sub: Any) -> None:
    r: argparse.ArgumentParser = sub.add_parser(
        "report",
        help="GPU-hours allocated, active, idle and reclaimed by user, account, partition",
        description="The waste of a period for sysadmins (reader or admin certificate): "
        "GPU-hours allocated, active, idle and reclaimed by user, account and partition, "
        "from ended jobs' summaries and the jobs running now.",
    )
    r.add_argument(
        "--since", type=since_arg, default="7d", metavar="WHEN", help=f"from {SINCE_HELP}"
    )
    r.add_argument("--csv", action="store_true", help="CSV (one row per user/account/partition)")
    add_client_options(r)
    r.set_defaults(func=report_main)
