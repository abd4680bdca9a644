"""argparse ``type=`` converters shared by every ``gpuwarden`` subcommand, so a bad value
gets the same clear message everywhere (argparse prefixes it with the flag's name)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from gpuwarden.common.durations import parse_duration


def duration_arg(text: str) -> float:
    """Seconds, or a number with ``s``, ``m`` or ``h``."""
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (use seconds, or a number with s, m or h)"
        ) from None


def int_arg(minimum: int = 0) -> Callable[[str], int]:
    """A whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse
