"""Durations as sysadmins write them: seconds, or a number with ``s``, ``m`` or ``h``."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object, *, what: str = "duration") -> float:
    """Return seconds; raise ValueError naming ``what`` for anything else.

    >>> parse_duration("30m")
    1800.0
    """
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a duration, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(
                f"{what}: {value!r} is not a duration (use seconds, or a number with s, m or h)"
            )
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f"{what}: expected a duration, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what}: {value!r} must be a finite, non-negative duration")
    return seconds
