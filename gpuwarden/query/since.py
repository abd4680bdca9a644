"""Points in time as a user types them: ``1h`` or ``2d`` (that long ago), an ISO-8601 time,
or Unix seconds."""

from __future__ import annotations

import datetime as dt
import math
import re

from gpuwarden.common.durations import parse_duration

_UNIX = re.compile(r"\d+(?:\.\d+)?")
_AGO = re.compile(r"\d+(?:\.\d+)?\s*[A-Za-z]+")

HELP = "1h or 2d (that long ago), an ISO-8601 time such as 2026-11-28T09:00, or Unix seconds"


def parse_since(text: str, *, now: float) -> float:
    """Unix seconds for ``text``; ValueError saying what is accepted otherwise.

    >>> parse_since("1h", now=7200.0)
    3600.0
    """
    value = text.strip()
    if _UNIX.fullmatch(value):
        return float(value)
    if _AGO.fullmatch(value):
        try:
            return now - parse_duration(value)
        except ValueError:
            pass
    else:
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            ts = when.timestamp()  # a time without a zone is local time
            if math.isfinite(ts):
                return ts
    raise ValueError(f"{text!r} is not a time (use {HELP})")
