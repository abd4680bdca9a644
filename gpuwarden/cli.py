"""The ``gpuwarden`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

import gpuwarden
from gpuwarden.agent.sampler import SAMPLERS, SamplerError
from gpuwarden.agent.spool import SpoolError
from gpuwarden.collector.store import StoreError
from gpuwarden.common.argtypes import duration_arg, int_arg
from gpuwarden.common.config import ConfigError
from gpuwarden.query.commands import add_audit_parser, add_status_parser

log = logging.getLogger("gpuwarden")

EXIT_USAGE = 2


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _agent(args: argparse.Namespace) -> int:
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
    asyncio.run(run_agent(cfg))
    return 0


def _collector(args: argparse.Namespace) -> int:
    from gpuwarden.collector.config import load_collector_config
    from gpuwarden.collector.main import run_collector
    from gpuwarden.collector.outputs.config import load_outputs
    from gpuwarden.collector.policy import load_policy

    cfg = load_collector_config(
        args.config,
        {
            "listen": args.listen,
            "state_dir": str(args.state_dir) if args.state_dir else None,
            "insecure": True if args.insecure else None,
        },
    )
    policies = load_policy(args.config, {"enforce": True if args.enforce else None})
    outputs = load_outputs(args.config, cfg.state_dir)
    asyncio.run(run_collector(cfg, policies, outputs))
    return 0


def _demo(args: argparse.Namespace) -> int:
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
    )
    return asyncio.run(run_demo(opts))


def _replay(args: argparse.Namespace) -> int:
    from gpuwarden.collector.replay import replay_main

    return replay_main(args.replay_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpuwarden",
        description="Find idle GPU allocations on Slurm clusters and give them back, safely.",
    )
    parser.add_argument("--version", action="version", version=f"gpuwarden {gpuwarden.__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    a = sub.add_parser(
        "agent",
        help="run the node agent (samples GPUs, streams reports)",
        description="Sample every GPU of this node, attribute it to its Slurm job and stream "
        "window reports to the collector. Settings: [agent] in --config, GPUWARDEN_AGENT_* "
        "variables, and these flags (flags win).",
    )
    a.add_argument("--config", type=Path, help="TOML config file ([agent] table)")
    a.add_argument("--node", help="node name (default: short host name)")
    a.add_argument("--collector", metavar="HOST:PORT", help="collector address")
    a.add_argument("--sampler", choices=sorted(SAMPLERS), help="GPU source (default nvml)")
    a.add_argument("--spool-dir", type=Path, help="where un-acked reports wait")
    a.add_argument("--sample-interval", type=duration_arg, metavar="D", help="default 1s")
    a.add_argument("--report-interval", type=duration_arg, metavar="D", help="default 5s")
    a.add_argument("--nvml-library", metavar="PATH", help="libnvidia-ml.so.1 to load")
    a.add_argument("--slurm", choices=("auto", "on", "off"), help="Slurm attribution")
    a.add_argument("--insecure", action="store_true", help="plaintext gRPC (demos, tests)")
    a.set_defaults(func=_agent)

    c = sub.add_parser(
        "collector",
        help="run the central collector",
        description="Receive agent reports over gRPC, store them (SQLite), serve the query "
        "API. Settings: [collector] in --config, GPUWARDEN_COLLECTOR_* variables, flags.",
    )
    c.add_argument("--config", type=Path, help="TOML config file ([collector] table)")
    c.add_argument("--listen", metavar="HOST:PORT", help="default 127.0.0.1:50051")
    c.add_argument("--state-dir", type=Path, help="database and audit log folder")
    c.add_argument("--insecure", action="store_true", help="plaintext gRPC (demos, tests)")
    c.add_argument(
        "--enforce",
        action="store_true",
        help="turn enforcement on (default: dry-run; or [policy] enforce = true)",
    )
    c.set_defaults(func=_collector)

    d = sub.add_parser(
        "demo",
        help="run a simulated cluster end to end (no external service)",
        description="Start a collector on SQLite in a temporary folder and simulated nodes "
        "streaming over real gRPC on loopback, and show the live cluster. With --duration "
        "it runs without a terminal and ends with a summary.",
    )
    d.add_argument("--nodes", type=int_arg(1), default=16, help="default 16")
    d.add_argument("--gpus", type=int_arg(1), default=4, help="GPUs per node, default 4")
    d.add_argument("--duration", type=duration_arg, metavar="D", help="stop after D (e.g. 60s)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--state-dir", type=Path, help="keep the database here (default: temp)")
    d.add_argument("--sample-interval", type=duration_arg, default=1.0, metavar="D")
    d.add_argument("--report-interval", type=duration_arg, default=2.0, metavar="D")
    d.add_argument("--refresh", type=duration_arg, default=2.0, metavar="D", help="table refresh")
    d.add_argument(
        "--idle-window",
        type=duration_arg,
        default=20.0,
        metavar="D",
        help="idle window for the demo's detection (default 20s so it shows quickly)",
    )
    d.set_defaults(func=_demo)

    r = sub.add_parser(
        "replay",
        help="show what a policy would have done on recorded traces",
        description="Run the detection rules and the action ladder over a JSON Lines trace. "
        "See `gpuwarden replay --help`.",
        add_help=False,
    )
    r.add_argument("replay_args", nargs=argparse.REMAINDER)
    r.set_defaults(func=_replay)

    add_audit_parser(sub)
    add_status_parser(sub)
    return parser


def _replay_passthrough(argv: Sequence[str]) -> list[str] | None:
    """``gpuwarden [-v] replay ARGS``: ARGS (with --help) go to replay's own parser."""
    for i, arg in enumerate(argv):
        if arg == "replay":
            return list(argv[i + 1 :])
        if not (arg in ("-v", "--verbose") or (arg.startswith("-v") and set(arg[1:]) == {"v"})):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    replay_args = _replay_passthrough(argv)
    if replay_args is not None:
        from gpuwarden.collector.replay import replay_main

        return replay_main(replay_args)
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"gpuwarden {args.command}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except grpc.aio.AioRpcError as exc:
        target = getattr(args, "collector", "the collector")
        print(
            f"gpuwarden {args.command}: collector {target}: {exc.code().name}: {exc.details()}",
            file=sys.stderr,
        )
        return 1
    except (OSError, SamplerError, SpoolError, StoreError) as exc:
        print(f"gpuwarden {args.command}: {exc}", file=sys.stderr)
        return 1
