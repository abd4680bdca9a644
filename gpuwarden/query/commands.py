"""``gpuwarden status`` and ``gpuwarden audit``: readers of the query API, nothing more.

They import no agent, collector or demo code: the client, the views and the formatting of
this package are all they use.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc

from gpuwarden.common.argtypes import duration_arg, int_arg
from gpuwarden.common.types import ActionRequest
from gpuwarden.query.client import QueryClient
from gpuwarden.query.config import ClientConfig, load_client_config
from gpuwarden.query.format import (
    cluster_json,
    fit_width,
    format_audit_line,
    format_status,
)
from gpuwarden.query.munge import MungeUnavailable
from gpuwarden.query.since import HELP as SINCE_HELP
from gpuwarden.query.since import parse_since
from gpuwarden.query.views import ClusterView, cluster_view

MAX_JOB_ID_CHARS = 128


def add_client_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "collector connection",
        "Also read from /etc/gpuwarden/client.toml, ~/.config/gpuwarden/client.toml "
        "($XDG_CONFIG_HOME), --client-config and GPUWARDEN_CLIENT_* variables; flags win.",
    )
    g.add_argument("--client-config", type=Path, metavar="FILE", help="a [client] TOML file")
    g.add_argument("--collector", metavar="HOST:PORT", help="default 127.0.0.1:50051")
    g.add_argument("--tls-ca", metavar="PEM", help="CA that signed the collector's certificate")
    g.add_argument("--tls-cert", metavar="PEM", help="this client's certificate")
    g.add_argument("--tls-key", metavar="PEM", help="this client's private key")
    g.add_argument(
        "--insecure", action="store_true", help="plaintext gRPC (a demo or test collector)"
    )
    g.add_argument(
        "--munge",
        action="store_true",
        help="prove who you are with MUNGE (researchers; the collector's MUNGE port); the "
        "default when no client certificate is configured and munge is installed",
    )


def client_config(args: argparse.Namespace) -> ClientConfig:
    return load_client_config(
        args.client_config,
        {
            "collector": args.collector,
            "tls_ca": args.tls_ca,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "insecure": True if args.insecure else None,
            "munge": True if args.munge else None,
        },
    )


def rpc_error_message(exc: grpc.aio.AioRpcError, cfg: ClientConfig) -> str:
    """One line: which collector, what went wrong, and what to try."""
    code = exc.code()
    detail = (exc.details() or "").strip().splitlines()
    text = f"collector {cfg.collector}: {code.name}: {detail[0] if detail else 'no detail'}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        text += f" (no answer within {cfg.timeout:g} s)"
    elif code == grpc.StatusCode.UNAVAILABLE and "refused" in text.lower():
        text += " (is the collector running there?)"
    elif code == grpc.StatusCode.UNAVAILABLE:
        text += (
            " (plaintext: if the collector requires TLS, give --tls-ca, --tls-cert, --tls-key)"
            if cfg.insecure
            else " (mTLS: check the collector's address and that it uses TLS)"
        )
    return text


def run_reader(
    command: str, cfg: ClientConfig, work: Callable[[], Coroutine[Any, Any, int]]
) -> int:
    try:
        return asyncio.run(work())
    except grpc.aio.AioRpcError as exc:
        print(f"gpuwarden {command}: {rpc_error_message(exc, cfg)}", file=sys.stderr)
        return 1
    except MungeUnavailable as exc:
        print(f"gpuwarden {command}: no MUNGE credential: {exc}", file=sys.stderr)
        return 1


# ---- status ---------------------------------------------------------------------------


def _render(view: ClusterView, as_json: bool) -> str:
    if as_json:
        return json.dumps(cluster_json(view), sort_keys=True)
    return format_status(view, width=fit_width(shutil.get_terminal_size((100, 24)).columns))


def status_main(args: argparse.Namespace) -> int:
    cfg = client_config(args)
    if args.watch is None:

        async def once() -> int:
            async with QueryClient.from_config(cfg) as client:
                view = cluster_view(await client.snapshot())
            print(_render(view, args.json))
            return 0

        return run_reader("status", cfg, once)
    try:
        asyncio.run(_watch(cfg, args.watch, args.json))
    except KeyboardInterrupt:
        return 0
    return 0  # pragma: no cover (the loop ends only with Ctrl-C)


async def _watch(cfg: ClientConfig, interval_s: float, as_json: bool) -> None:
    """Print the cluster every ``interval_s`` (a screen on a terminal, else one table or
    JSON object after the other); a lost collector is said and retried."""
    tty = sys.stdout.isatty() and not as_json
    async with QueryClient.from_config(cfg) as client:
        while True:
            stamp = time.strftime("%H:%M:%S")
            try:
                text = _render(cluster_view(await client.snapshot()), as_json)
            except (grpc.aio.AioRpcError, MungeUnavailable) as exc:
                reason = (
                    rpc_error_message(exc, cfg)
                    if isinstance(exc, grpc.aio.AioRpcError)
                    else f"no MUNGE credential: {exc}"
                )
                text = f"{stamp} {reason}; retrying every {interval_s:g} s"
                if not tty:
                    print(f"gpuwarden status: {text}", file=sys.stderr, flush=True)
                    await asyncio.sleep(interval_s)
                    continue
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J")
                text += f"\n{stamp}, every {interval_s:g} s; Ctrl-C to stop"
            elif not as_json:
                text += "\n"  # a blank line between tables
            print(text, flush=True)
            await asyncio.sleep(interval_s)


def _watch_interval(text: str) -> float:
    seconds = duration_arg(text)
    if seconds < 0.1:
        raise argparse.ArgumentTypeError(f"{text!r} is shorter than 0.1 s")
    return seconds


def add_status_parser(sub: Any) -> None:
    s: argparse.ArgumentParser = sub.add_parser(
        "status",
        help="print the live cluster from a collector",
        description="Every node and its GPUs as the collector sees them now: connection, "
        "Slurm (ok, off or unavailable), one character per GPU, jobs and users.",
    )
    s.add_argument("--json", action="store_true", help="one JSON object (per refresh)")
    s.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=_watch_interval,
        metavar="INTERVAL",
        help="refresh every INTERVAL (default 2s) until Ctrl-C",
    )
    add_client_options(s)
    s.set_defaults(func=status_main)


# ---- audit ----------------------------------------------------------------------------


def since_arg(text: str) -> float:
    try:
        return parse_since(text, now=time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def job_arg(text: str) -> str:
    if not text or len(text) > MAX_JOB_ID_CHARS or not text.isprintable() or text != text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id")
    return text


def _since_words(since: float) -> str:
    if not since:
        return ""
    return " since " + dt.datetime.fromtimestamp(since).isoformat(sep=" ", timespec="seconds")


def audit_main(args: argparse.Namespace) -> int:
    cfg = client_config(args)

    async def go() -> int:
        async with QueryClient.from_config(cfg) as client:
            records = await client.audit(job_id=args.job or "", since=args.since, limit=args.limit)
            if not records and args.job:
                known = (await client.history(job_id=args.job, limit=1)).windows
                print(
                    f"gpuwarden audit: no audit records for job {args.job}"
                    f"{_since_words(args.since)}"
                    + ("" if known else " (the collector has no windows of this job either)"),
                    file=sys.stderr,
                )
                return 1
        if not records:
            print(f"gpuwarden audit: no audit records{_since_words(args.since)}", file=sys.stderr)
        for r in reversed(records):  # oldest first, like a log
            print(json.dumps(r.to_json(), sort_keys=True) if args.json else format_audit_line(r))
        return 0

    return run_reader("audit", cfg, go)


def add_audit_parser(sub: Any) -> None:
    au: argparse.ArgumentParser = sub.add_parser(
        "audit",
        help="print the collector's audit log (findings, warnings, actions, evidence)",
        description="Every decision the collector took or would have taken (dry-run), with "
        "its evidence, oldest first. Exits 1 when --job has no records.",
    )
    au.add_argument("--job", type=job_arg, metavar="JOBID", help="only this job")
    au.add_argument(
        "--since", type=since_arg, default=0.0, metavar="WHEN", help=f"from {SINCE_HELP}"
    )
    au.add_argument("--limit", type=int_arg(1), default=1000, help="newest N (default 1000)")
    au.add_argument("--json", action="store_true", help="one JSON object per line")
    add_client_options(au)
    au.set_defaults(func=audit_main)


# ---- exempt ---------------------------------------------------------------------------


def _exempt_duration(text: str) -> float:
    seconds = duration_arg(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: an exemption must last longer than 0 s")
    return seconds


def exempt_main(args: argparse.Namespace) -> int:
    cfg = client_config(args)

    async def go() -> int:
        async with QueryClient.from_config(cfg) as client:
            reply = await client.request_action(
                ActionRequest(args.job, "exempt", duration_s=args.duration, reason=args.reason)
            )
        if not reply.ok:
            print(f"gpuwarden exempt: job {args.job}: {reply.detail}", file=sys.stderr)
            return 1
        print(f"job {args.job}: {reply.detail}")
        return 0

    return run_reader("exempt", cfg, go)


def add_exempt_parser(sub: Any) -> None:
    ex: argparse.ArgumentParser = sub.add_parser(
        "exempt",
        help="leave one job alone for a while (admin; audited with your name)",
        description="Exempt a running job from detection and enforcement for a duration, "
        "with a reason. Takes effect at once in the running collector, survives its "
        "restarts, and ends by itself; the audit log records who asked and why.",
    )
    ex.add_argument("job", type=job_arg, metavar="JOBID")
    ex.add_argument(
        "--for",
        dest="duration",
        type=_exempt_duration,
        required=True,
        metavar="DURATION",
        help="how long, e.g. 4h, 2d",
    )
    ex.add_argument("--reason", required=True, help="why (it goes to the audit log)")
    add_client_options(ex)
    ex.set_defaults(func=exempt_main)
