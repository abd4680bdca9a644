"""What an admin action will do, in the words the confirmation dialog shows (no Textual)."""

from __future__ import annotations

import datetime as dt
import time

from gpuwarden.common.durations import parse_duration
from gpuwarden.tui.model import JobRow

TITLES = {
    "warn": "Warn now",
    "release_dask_worker": "Release Dask worker",
    "requeue": "Requeue",
    "requeuehold": "Requeue and hold",
    "exempt": "Exempt",
}

_DONE = {
    "release_dask_worker": "its Dask scheduler retires the worker (its data moves to the other "
    "workers) and the worker's Slurm job ends",
    "requeue": "Slurm stops it now and puts it back in the queue; it starts again when "
    "resources allow",
    "requeuehold": "Slurm stops it now and puts it back in the queue held: it does not start "
    "again until someone releases it (scontrol release {job})",
}


def _who(row: JobRow) -> str:
    nodes = ", ".join(row.nodes[:3]) + (" ..." if len(row.nodes) > 3 else "")
    return (
        f"job {row.job_id} of {row.user or 'an unknown user'} "
        f"({row.gpus} GPU{'s' if row.gpus != 1 else ''} on {nodes})"
    )


def describe(
    action: str, row: JobRow, enforcement: str, duration_s: float = 0.0, now: float = 0.0
) -> str:
    """Exactly what will happen when the admin confirms ``action`` on ``row``.
    ``enforcement`` is the collector's mode as the dashboard last saw it (on, dry-run, ?)."""
    if action == "warn":
        return (
            f"Send a warning to the owner of {_who(row)} now, through the collector's "
            "notifiers. Nothing is done to the job. The audit log records it with your name."
        )
    if action == "exempt" and duration_s <= 0:
        return (
            f"Detection leaves {_who(row)} alone for the time you give below: no finding, "
            "warning or action until then. The reason and your name go to the audit log."
        )
    if action == "exempt":
        until = dt.datetime.fromtimestamp((now or time.time()) + duration_s)
        return (
            f"Detection leaves {_who(row)} alone for {_duration_words(duration_s)} (until "
            f"{until:%Y-%m-%d %H:%M}): no finding, warning or action. The reason and your "
            "name go to the audit log."
        )
    what = _DONE[action].format(job=row.job_id)
    head = f"{TITLES[action]} {_who(row)}: {what}."
    if enforcement == "on":
        return f"{head} Enforcement is on: this happens now. The audit log records your name."
    if enforcement == "dry-run":
        return (
            f"Enforcement is dry-run on this collector: nothing happens to {_who(row)}; the "
            f"audit log records 'dry run: would {action}' with your name. (With enforcement "
            f"on, {what}.)"
        )
    return (
        f"{head} If the job's policy enforces, this happens now; otherwise the audit log only "
        f"records 'dry run: would {action}'. Either way it records your name."
    )


def _duration_words(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def exempt_duration(text: str) -> float:
    """Seconds from ``2h`` / ``1d`` / ``90m``; ValueError naming the input otherwise."""
    seconds = parse_duration(text.strip())
    if not 0 < seconds <= 30 * 86400:
        raise ValueError(f"{text!r}: an exemption lasts more than 0 s and at most 30d")
    return seconds
