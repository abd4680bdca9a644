"""Durations as sysadmins write them: seconds, or a number with ``s``, ``m``, ``h``, ``d``
or ``w`` (``90``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"``, ``"1w"``).

The one parser of durations: config files, environment variables and command-line flags
all come here, so each accepts the same forms and refuses the rest with the same words.
"""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(-?)\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
FORMS = "seconds, or a number with s, m, h, d or w"


class DurationError(ValueError):
    """Not a duration, or out of range. ``reason`` is the message without the setting's name."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.reason = reason


def parse_duration(value: object, *, what: str = "duration", positive: bool = False) -> float:
    """Return seconds; raise :class:`DurationError` (a ValueError) naming ``what`` otherwise.

    Zero is allowed unless ``positive``; a negative duration never is.

    >>> parse_duration("30m")
    1800.0
    >>> parse_duration("1d")
    86400.0
    """
    if isinstance(value, bool):
        raise DurationError(what, "expected a duration, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise DurationError(what, f"{value!r} is not a finite duration")
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise DurationError(what, f"{value!r} is not a duration (use {FORMS})")
        seconds = float(m.group(2)) * _UNIT_S[m.group(3)]
        if m.group(1):
            seconds = -seconds
    else:
        raise DurationError(what, f"expected a duration, got {type(value).__name__}")
    if seconds < 0 or (positive and seconds == 0):
        rule = "must be positive" if positive else "must not be negative"
        raise DurationError(what, f"{value!r}: a duration {rule}")
    return seconds
