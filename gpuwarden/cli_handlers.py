"""What each of the ``gpuwarden`` command's own subcommands does (agent, collector, demo,
replay, export, certs): one function per subcommand, given the parsed arguments, returning
the exit status. Each imports what it runs only when it is called, so ``gpuwarden agent``
loads no collector code. The command line itself is built in ``gpuwarden.cli``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE = 2


def cmd_agent(args: argparse.Namespace) -> int:
    from gpuwarden.agent.config import load_agent_config
    from gpuwarden.agent.main import run_agent

    cfg = load_agent_config(
        args.config,
        {
            "node": args.node,
            "collector": args.collector,
            "sampler": args.sampler,
            "spool_dir": str(args.spool_dir) if args.spool_dir else None,
            "sample_interval": args.sample_interval,
            "report_interval": args.report_interval,
            "insecure": True if args.insecure else None,
            "nvml_library": args.nvml_library,
            "slurm": args.slurm,
        },
    )
    run_agent(cfg)
    return 0


def cmd_collector(args: argparse.Namespace) -> int:
    import asyncio

    from gpuwarden.collector.config import load_collector_config
    from gpuwarden.collector.main import run_collector
    from gpuwarden.collector.outputs.config import load_outputs
    from gpuwarden.collector.policy import PolicySet, load_policy

    cfg = load_collector_config(
        args.config,
        {
            "listen": args.listen,
            "state_dir": str(args.state_dir) if args.state_dir else None,
            "insecure": True if args.insecure else None,
        },
    )
    flags = {"enforce": True if args.enforce else None}
    policies = load_policy(args.config, flags)
    outputs = load_outputs(args.config, cfg.state_dir)

    def reload_policy() -> PolicySet:  # on SIGHUP: the file again, the same flags
        return load_policy(args.config, flags)

    asyncio.run(run_collector(cfg, policies, outputs, reload_policy))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from gpuwarden.demo import DemoOptions, run_demo

    opts = DemoOptions(
        nodes=args.nodes,
        gpus_per_node=args.gpus,
        duration_s=args.duration,
        seed=args.seed,
        state_dir=args.state_dir,
        sample_interval_s=args.sample_interval,
        report_interval_s=args.report_interval,
        refresh_s=args.refresh,
        idle_window_s=args.idle_window,
        listen=args.listen,
    )
    return asyncio.run(run_demo(opts))


def cmd_replay(args: argparse.Namespace) -> int:
    from gpuwarden.collector.replay_cli import replay_main

    return replay_main(args.replay_args)


def cmd_export(args: argparse.Namespace) -> int:
    import time

    from gpuwarden.collector.export import ExportFilter, export_trace
    from gpuwarden.query.since import parse_since

    now = time.time()
    try:
        since = None if args.since is None else parse_since(args.since, now=now)
        until = None if args.until is None else parse_since(args.until, now=now)
    except ValueError as exc:
        print(f"gpuwarden export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    db = args.db
    if db is None and args.config is None:
        print("gpuwarden export: give the database (--db PATH) or --config FILE", file=sys.stderr)
        return EXIT_USAGE
    if db is None:
        from gpuwarden.collector.config import load_collector_config

        db = load_collector_config(args.config).database
    f = ExportFilter(
        since, until, args.node or "", args.job or "", args.user or "", args.partition or ""
    )
    if args.out == "-":
        summary = export_trace(db, sys.stdout.buffer, f)
        sys.stdout.flush()
    else:
        with Path(args.out).open("wb") as out:
            summary = export_trace(db, out, f)
    print(f"gpuwarden export: {summary.jobs} jobs, {summary.samples} samples", file=sys.stderr)
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    try:
        from gpuwarden.certs import CertsError, Issued, SiteCA
    except ImportError as exc:
        print(
            f"gpuwarden certs: needs the 'cryptography' package "
            f"(pip install 'gpuwarden[certs]'): {exc}",
            file=sys.stderr,
        )
        return 1
    wanted: list[tuple[str, str, list[str]]] = []
    if args.collector_host:
        wanted.append(("collector", args.collector_host[0], args.collector_host))
    wanted += [("node", n, []) for n in args.node]
    wanted += [("admin", n, []) for n in args.admin]
    wanted += [("reader", n, []) for n in args.reader]
    try:
        ca, made = SiteCA.open_or_create(
            args.dir, org=args.org, name=args.ca_name, days=args.ca_days
        )
        print(f"{'made' if made else 'using'} site CA {ca.directory / 'ca.pem'}")
        issued: list[Issued] = []
        for role, name, hosts in wanted:
            issued.append(ca.issue(role, name, hosts=hosts, days=args.days, force=args.force))
    except (CertsError, OSError) as exc:
        print(f"gpuwarden certs: {exc}", file=sys.stderr)
        return 1
    for i in issued:
        print(f"  {i.role:<9} {i.name:<24} {i.cert}  (key {i.key.name})")
    return 0
