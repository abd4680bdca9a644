"""Small value helpers shared by the Slurm parsers."""

from __future__ import annotations

__all__ = ["int_or_none", "null_to_empty"]


def int_or_none(value: str | None) -> int | None:
    """``"12"`` -> 12; None, "" or anything that is not an ASCII integer -> None."""
    if value is None or not value.isascii():
        return None
    try:
        return int(value)
    except ValueError:
        return None


def null_to_empty(value: str | None) -> str:
    """Slurm prints a missing value as ``(null)`` or ``N/A``: both become ""."""
    return "" if value is None or value in ("(null)", "N/A") else value
