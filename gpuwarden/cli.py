"""The ``gpuwarden`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import gpuwarden
from gpuwarden.agent.sampler import SAMPLERS, SamplerError
from gpuwarden.agent.spool import SpoolError
from gpuwarden.cli_handlers import (
    EXIT_USAGE,
    cmd_agent,
    cmd_certs,
    cmd_collector,
    cmd_demo,
    cmd_export,
    cmd_replay,
)
from gpuwarden.common.argtypes import (
    address_arg,
    attach_negative_values,
    checked,
    int_arg,
    positive_duration_arg,
)
from gpuwarden.common.config import ConfigError
from gpuwarden.common.names import check_host, check_node, check_person

if TYPE_CHECKING:
    import grpc

log = logging.getLogger("gpuwarden")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


CERTS_HELP = """\
Files written to DIR: ca.pem, ca.key (the site CA, reused when it exists);
collector.pem/.key; node-NAME.pem/.key; admin-NAME.pem/.key; reader-NAME.pem/.key.
Keys are ECDSA P-256, mode 0600; copy each node's files to that node only.

Roles: every certificate names its role as the subject alternative name URI
gpuwarden:role:ROLE (collector, node, admin or reader), which the collector reads from the
TLS peer, and as OU=ROLE in its subject. The collector's certificate is for TLS servers
(extended key usage serverAuth) with the given hosts as DNS/IP names; the others are for
TLS clients (clientAuth) with CN = the node or person.

Example: gpuwarden certs /etc/gpuwarden/pki --collector-host gpu-mgmt \\
           --collector-host 10.0.0.5 --node gpu01 --node gpu02 --admin alice --reader grafana
"""


def build_parser(*, agent_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line; with ``agent_only`` just ``gpuwarden agent``, so that the
    node's long-running process does not import the collector, query, alert, deploy and
    dashboard code it never runs (measured in bench/agent_overhead.py)."""
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
    a.add_argument("--sample-interval", type=positive_duration_arg, metavar="D", help="default 1s")
    a.add_argument("--report-interval", type=positive_duration_arg, metavar="D", help="default 5s")
    a.add_argument("--nvml-library", metavar="PATH", help="libnvidia-ml.so.1 to load")
    a.add_argument("--slurm", choices=("auto", "on", "off"), help="Slurm attribution")
    a.add_argument("--insecure", action="store_true", help="plaintext gRPC (demos, tests)")
    a.set_defaults(func=cmd_agent)
    if agent_only:
        return parser
    from gpuwarden.alerts import add_alerts_parser
    from gpuwarden.deploy.commands import add_deploy_parsers
    from gpuwarden.query.commands import add_audit_parser, add_exempt_parser, add_status_parser
    from gpuwarden.query.jobstats_cmd import add_jobstats_parser, add_report_parser
    from gpuwarden.tui.command import add_top_parser

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
    c.set_defaults(func=cmd_collector)

    d = sub.add_parser(
        "demo",
        help="run a simulated cluster end to end (no external service)",
        description="Start a collector on SQLite in a temporary folder and simulated nodes "
        "streaming over real gRPC on loopback, and show the live cluster. With --duration "
        "it runs without a terminal and ends with a summary.",
    )
    d.add_argument("--nodes", type=int_arg(1), default=16, help="default 16")
    d.add_argument("--gpus", type=int_arg(1), default=4, help="GPUs per node, default 4")
    d.add_argument(
        "--duration", type=positive_duration_arg, metavar="D", help="stop after D (e.g. 60s)"
    )
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--state-dir", type=Path, help="keep the database here (default: temp)")
    d.add_argument(
        "--listen",
        type=address_arg,
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="the demo collector's gRPC address, e.g. to point `gpuwarden status` at it "
        "(default: a free port on 127.0.0.1)",
    )
    d.add_argument("--sample-interval", type=positive_duration_arg, default=1.0, metavar="D")
    d.add_argument("--report-interval", type=positive_duration_arg, default=2.0, metavar="D")
    d.add_argument(
        "--refresh", type=positive_duration_arg, default=2.0, metavar="D", help="table refresh"
    )
    d.add_argument(
        "--idle-window",
        type=positive_duration_arg,
        default=20.0,
        metavar="D",
        help="idle window for the demo's detection (default 20s so it shows quickly)",
    )
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser(
        "replay",
        help="show what a policy would have done on recorded traces",
        description="Run the detection rules and the action ladder over a JSON Lines trace. "
        "See `gpuwarden replay --help`.",
        add_help=False,
    )
    r.add_argument("replay_args", nargs=argparse.REMAINDER)
    r.set_defaults(func=cmd_replay)

    ex = sub.add_parser(
        "export",
        help="write stored windows and jobs as a replay trace (JSON Lines)",
        description="Write the windows and jobs stored by the collector in a time range as a "
        "`gpuwarden replay` trace, read-only. Times: 1h or 2d (that long ago), an ISO-8601 "
        "time, or Unix seconds.",
    )
    src = ex.add_mutually_exclusive_group()
    src.add_argument("--config", type=Path, help="collector config (its database)")
    src.add_argument("--db", type=Path, metavar="PATH", help="the collector's SQLite database")
    ex.add_argument("--since", metavar="TIME", help="windows ending at or after TIME")
    ex.add_argument("--until", metavar="TIME", help="windows ending at or before TIME")
    ex.add_argument("--node", help="only this node")
    ex.add_argument("--job", metavar="JOBID", help="only this job")
    ex.add_argument("--user", help="only jobs of this user")
    ex.add_argument("--partition", help="only jobs of this partition")
    ex.add_argument("--out", default="-", metavar="FILE", help="output file (default: stdout)")
    ex.set_defaults(func=cmd_export)

    add_audit_parser(sub)
    add_exempt_parser(sub)
    add_status_parser(sub)
    add_jobstats_parser(sub)
    add_report_parser(sub)
    add_top_parser(sub)
    add_alerts_parser(sub)

    ce = sub.add_parser(
        "certs",
        help="make a site CA and the collector, node, admin and reader certificates",
        description="Make (or reuse) a site certificate authority in DIR and issue the "
        "mTLS certificates gpuwarden uses. Existing certificates are not overwritten "
        "unless --force.",
        epilog=CERTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ce.add_argument("dir", type=Path, metavar="DIR", help="where the files are written")
    ce.add_argument(
        "--collector-host",
        action="append",
        default=[],
        type=checked(check_host),
        metavar="HOST",
        help="issue collector.pem for this DNS name or IP (repeat for each; the first is "
        "its CN); agents must connect to one of them",
    )
    for role, what in (
        ("node", "a GPU node (CN = node name)"),
        ("admin", "an administrator"),
        ("reader", "a read-only user or tool"),
    ):
        ce.add_argument(
            f"--{role}",
            action="append",
            default=[],
            type=checked(check_node if role == "node" else check_person),
            metavar="NAME",
            help=f"issue {role}-NAME.pem for {what} (repeatable)",
        )
    ce.add_argument("--days", type=int_arg(1), default=825, help="validity (default 825)")
    ce.add_argument(
        "--ca-days", type=int_arg(1), default=3650, help="CA validity when made (default 3650)"
    )
    ce.add_argument("--ca-name", default="gpuwarden site CA", help="the CA's common name")
    ce.add_argument("--org", default="gpuwarden", help="organisation (O=) in new subjects")
    ce.add_argument("--force", action="store_true", help="overwrite existing certificates")
    ce.set_defaults(func=cmd_certs)
    add_deploy_parsers(sub)
    return parser


def _subcommand(argv: Sequence[str]) -> int | None:
    """Where the subcommand is in ``argv``: the first argument after the global -v flags."""
    for i, arg in enumerate(argv):
        if not (arg in ("-v", "--verbose") or (arg.startswith("-v") and set(arg[1:]) == {"v"})):
            return i
    return None


def _replay_passthrough(argv: Sequence[str]) -> list[str] | None:
    """``gpuwarden [-v] replay ARGS``: ARGS (with --help) go to replay's own parser."""
    i = _subcommand(argv)
    return list(argv[i + 1 :]) if i is not None and argv[i] == "replay" else None


def _rpc_error() -> type[grpc.aio.AioRpcError]:
    """grpcio's call error, when grpcio was loaded (the agent never loads it, and nothing
    unloaded can have raised one)."""
    loaded = sys.modules.get("grpc")
    if loaded is None:
        return cast("type[grpc.aio.AioRpcError]", _NoError)
    return cast("type[grpc.aio.AioRpcError]", loaded.aio.AioRpcError)


class _NoError(Exception):
    """Matches nothing: stands for an error class whose module was never loaded."""


def _store_error() -> type[Exception]:
    """Imported only when an error is being matched: the agent never loads the store."""
    from gpuwarden.collector.store import StoreError

    return StoreError


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    replay_args = _replay_passthrough(argv)
    if replay_args is not None:
        from gpuwarden.collector.replay_cli import replay_main

        return replay_main(replay_args)
    i = _subcommand(argv)
    parser = build_parser(agent_only=i is not None and argv[i] == "agent")
    args = parser.parse_args(attach_negative_values(argv))
    _setup_logging(args.verbose)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"gpuwarden {args.command}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except _rpc_error() as exc:
        target = getattr(args, "collector", "the collector")
        print(
            f"gpuwarden {args.command}: collector {target}: {exc.code().name}: {exc.details()}",
            file=sys.stderr,
        )
        return 1
    except (OSError, SamplerError, SpoolError, _store_error()) as exc:
        print(f"gpuwarden {args.command}: {exc}", file=sys.stderr)
        return 1
