"""``gpuwarden replay``: the command line (arguments, policy, output)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from gpuwarden.collector.policy import load_policy
from gpuwarden.collector.replay import replay_lines
from gpuwarden.collector.replay_report import format_table
from gpuwarden.collector.trace import TraceError, dumps
from gpuwarden.common.argtypes import (
    attach_negative_values,
    duration_arg,
    int_arg,
    positive_duration_arg,
)
from gpuwarden.common.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpuwarden replay",
        description="Run gpuwarden's detection rules and action ladder over a JSON Lines trace.",
    )
    p.add_argument("trace", metavar="TRACE", help="JSON Lines trace file, or - for stdin")
    p.add_argument("--json", action="store_true", help="one JSON object per finding/action")
    p.add_argument("--policy", type=Path, metavar="FILE", help="TOML file with a [policy] table")
    p.add_argument("--idle-window", type=positive_duration_arg, metavar="D")
    p.add_argument("--grace-period", type=duration_arg, metavar="D")
    p.add_argument("--warnings", type=int_arg(0), metavar="N")
    p.add_argument("--warn-interval", type=duration_arg, metavar="D")
    p.add_argument("--enforce", action="store_true", default=None, help="act (recorded only)")
    p.add_argument(
        "--window-s",
        type=positive_duration_arg,
        metavar="D",
        help="length of one sample's report window (default: policy window, 60 s)",
    )
    p.add_argument(
        "--job-gone-after",
        type=duration_arg,
        default=900.0,
        metavar="D",
        help="a job without data for this long has ended (as the collector's "
        "job_gone_after; default 15m)",
    )
    return p


def open_lines(trace: str) -> Iterable[bytes]:
    if trace == "-":
        yield from sys.stdin.buffer
        return
    with Path(trace).open("rb") as fh:
        yield from fh


def replay_main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(attach_negative_values(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a bad flag (2, message already printed)
        return int(exc.code or 0)
    overrides = {
        "idle_window": args.idle_window,
        "grace_period": args.grace_period,
        "warnings": args.warnings,
        "warn_interval": args.warn_interval,
        "enforce": args.enforce,
        "window": args.window_s,
    }
    try:
        policies = load_policy(args.policy, overrides)
    except ConfigError as exc:
        print(f"gpuwarden replay: policy: {exc}", file=sys.stderr)
        return 2
    name = "<stdin>" if args.trace == "-" else args.trace
    try:
        replayer, summary = replay_lines(open_lines(args.trace), policies, args.job_gone_after)
    except TraceError as exc:
        print(f"gpuwarden replay: {name}: {exc} (no results printed)", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gpuwarden replay: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    out = sys.stdout
    if args.json:
        out.write(b"".join(dumps(e.contract()) + b"\n" for e in replayer.events).decode())
    else:
        out.write(format_table(replayer.events, summary))
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(replay_main())
