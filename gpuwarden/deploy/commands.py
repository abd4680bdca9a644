"""``gpuwarden systemd-units`` and ``gpuwarden example-config``: write the shipped files out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gpuwarden.common.argtypes import checked
from gpuwarden.deploy import (
    DEFAULT_PREFIX,
    EXAMPLES,
    UNITS,
    DeployError,
    check_prefix,
    example_text,
    prefix_notes,
    write_example,
    write_units,
)

UNITS_HELP = f"""\
Then, as root:
  systemctl daemon-reload
  systemctl enable --now gpuwarden-collector   # on the management host
  systemctl enable --now gpuwarden-agent       # on every GPU node

The units read /etc/gpuwarden/agent.toml and /etc/gpuwarden/collector.toml (see
`gpuwarden example-config`), keep their state under /var/lib (StateDirectory=) and start
PREFIX/bin/gpuwarden. Check them with:
  systemd-analyze verify DIR/{UNITS[0]} DIR/{UNITS[1]}
"""


def _systemd_units(args: argparse.Namespace) -> int:
    try:
        written = write_units(args.dest, args.prefix, force=args.force)
    except (DeployError, OSError) as exc:
        print(f"gpuwarden systemd-units: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    for note in prefix_notes(args.prefix):
        print(f"gpuwarden systemd-units: note: {note}", file=sys.stderr)
    return 0


def _example_config(args: argparse.Namespace) -> int:
    try:
        if args.dest is None:
            sys.stdout.write(example_text(args.role))
            return 0
        path = write_example(args.role, args.dest, force=args.force)
    except (DeployError, OSError) as exc:
        print(f"gpuwarden example-config: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def add_deploy_parsers(sub: Any) -> None:
    u: argparse.ArgumentParser = sub.add_parser(
        "systemd-units",
        help="write the agent's and collector's systemd units into a folder",
        description=f"Write {' and '.join(UNITS)} into DIR (e.g. /etc/systemd/system), "
        "their ExecStart= pointing at PREFIX/bin/gpuwarden. Existing files are not "
        "overwritten unless --force.",
        epilog=UNITS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    u.add_argument("--dest", type=Path, required=True, metavar="DIR", help="an existing folder")
    u.add_argument(
        "--prefix",
        type=checked(check_prefix),
        default=DEFAULT_PREFIX,
        metavar="PREFIX",
        help=f"the venv gpuwarden is installed in (default {DEFAULT_PREFIX})",
    )
    u.add_argument("--force", action="store_true", help="overwrite existing units")
    u.set_defaults(func=_systemd_units)

    e: argparse.ArgumentParser = sub.add_parser(
        "example-config",
        help="print or write an example agent, collector or client config",
        description="Print the commented example config for ROLE, or write it with --dest "
        "(a file, or a folder to get ROLE.toml in it). Existing files are not overwritten "
        "unless --force. Edit the host name and certificate paths before use.",
    )
    e.add_argument(
        "role", choices=sorted(EXAMPLES), metavar="ROLE", help="agent, client or collector"
    )
    e.add_argument("--dest", type=Path, metavar="PATH", help="file or folder (default: stdout)")
    e.add_argument("--force", action="store_true", help="overwrite an existing file")
    e.set_defaults(func=_example_config)
