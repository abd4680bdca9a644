"""Recognising a Dask worker from its command line (pure; the agent reads ``/proc``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DaskWorkerFacts", "parse_dask_worker_cmdline"]


@dataclass(frozen=True, slots=True)
class DaskWorkerFacts:
    scheduler: str  # e.g. tcp://10.0.0.5:8786; "" when only --scheduler-file was given
    name: str  # the --name given to the worker; "" when none


_SCHED_RE = re.compile(r"(?:tcp|tls|ucx|ucxx|inproc|ws|wss)://\S+|[A-Za-z0-9_.\-]+:\d{1,5}")
_WORKER_MODULES = frozenset({"distributed.cli.dask_worker", "dask_cuda.cli.dask_cuda_worker"})
_WORKER_SCRIPTS = frozenset({"dask-worker", "dask-cuda-worker"})


def _worker_args(argv: Sequence[str]) -> Sequence[str] | None:
    """The arguments after the worker entry point, or None if argv is no Dask worker. The
    entry point is argv[0], or, after a Python interpreter and its options, ``-m MODULE`` or
    the script path."""
    i = 0
    if argv and argv[0].rsplit("/", 1)[-1].startswith("python"):
        i = 1
        while i < len(argv) and argv[i].startswith("-") and argv[i] != "-m":
            i += 1
        if i < len(argv) and argv[i] == "-m":
            if i + 1 < len(argv) and argv[i + 1] in _WORKER_MODULES:
                return argv[i + 2 :]
            return None
    if i >= len(argv):
        return None
    base = argv[i].rsplit("/", 1)[-1]
    if base in _WORKER_SCRIPTS:
        return argv[i + 1 :]
    if base == "dask" and i + 1 < len(argv):
        if argv[i + 1] == "worker":
            return argv[i + 2 :]
        if argv[i + 1] == "cuda" and i + 2 < len(argv) and argv[i + 2] == "worker":
            return argv[i + 3 :]
    return None


def parse_dask_worker_cmdline(argv: Sequence[str]) -> DaskWorkerFacts | None:
    """Recognise a Dask worker command line (``python -m distributed.cli.dask_worker
    tcp://HOST:PORT --name NAME ...``, ``dask-worker ...``, ``dask worker ...``) and return
    its scheduler address and name; None for anything else."""
    args = _worker_args(argv)
    if args is None:
        return None
    scheduler = ""
    name = ""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--name" and i + 1 < len(args):
            name = args[i + 1]
            i += 2
            continue
        if arg.startswith("--name="):
            name = arg.split("=", 1)[1]
        elif not arg.startswith("-") and not scheduler and _SCHED_RE.fullmatch(arg):
            scheduler = arg
        i += 1
    return DaskWorkerFacts(scheduler=scheduler, name=name)
