"""``gpuwarden top``: its arguments and entry point. Textual is imported only when the
dashboard starts, so the CLI works (and says what to install) without it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gpuwarden.query.commands import add_client_options, client_config

MISSING = (
    "gpuwarden top: the dashboard needs Textual, which is not installed here; "
    "install it with: pip install 'gpuwarden[tui]'"
)


def top_main(args: argparse.Namespace) -> int:
    cfg = client_config(args)
    try:
        from gpuwarden.tui.app import run_top
    except ImportError as exc:
        if exc.name != "textual" and not (exc.name or "").startswith("textual."):
            raise
        print(MISSING, file=sys.stderr)
        return 1
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("gpuwarden top: needs a terminal (for scripts: gpuwarden status)", file=sys.stderr)
        return 1
    return run_top(cfg, theme=args.theme)


def add_top_parser(sub: Any) -> None:
    t: argparse.ArgumentParser = sub.add_parser(
        "top",
        help="the live dashboard: cluster, jobs, findings, actions (needs gpuwarden[tui])",
        description="A terminal dashboard of the cluster as the collector sees it: GPUs by "
        "node and user, jobs by waste, each job's history, findings and actions; an admin "
        "certificate (or a plaintext collector) adds action keys. Press ? inside for help.",
    )
    t.add_argument("--theme", choices=("dark", "light"), default="dark", help="default dark")
    add_client_options(t)
    t.set_defaults(func=top_main)
