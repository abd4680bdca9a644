"""argparse helpers shared by every ``gpuwarden`` subcommand, so a bad value gets the same
clear message everywhere (argparse prefixes it with the flag's name)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence

from gpuwarden.common.address import split_host_port
from gpuwarden.common.durations import DurationError, parse_duration

_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def duration_arg(text: str) -> float:
    """Seconds, or a number with ``s``, ``m``, ``h``, ``d`` or ``w``; zero or more."""
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def positive_duration_arg(text: str) -> float:
    """As :func:`duration_arg`, but more than zero (intervals, windows)."""
    try:
        return parse_duration(text, positive=True)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


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


def checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse ``type=`` that keeps the text when ``check`` accepts it and turns the
    check's ValueError into argparse's message."""

    def parse(text: str) -> str:
        try:
            check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse


address_arg = checked(split_host_port)  # HOST:PORT, IPv6 hosts in brackets


def attach_negative_values(argv: Sequence[str]) -> list[str]:
    """``--flag -5m`` becomes ``--flag=-5m``.

    argparse takes ``-5m`` for an unknown option and says "expected one argument"; attached,
    the value reaches the flag's converter, which says what is wrong with it.
    """
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":  # the rest is positional
            return out + list(argv[i:])
        prev = out[-1] if out else ""
        if _NEGATIVE_VALUE.match(arg) and prev.startswith("--") and "=" not in prev:
            out[-1] = f"{prev}={arg}"
        else:
            out.append(arg)
    return out
