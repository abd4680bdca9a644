"""Slurm's compact lists: host lists (``gpu[01-03,07],login1``) and index lists (``0-1,3``)."""

from __future__ import annotations

import re

__all__ = ["expand_hostlist", "parse_index_list"]

_MAX_RANGE = 4096  # a wider range in one element is refused, not expanded


def parse_index_list(text: str) -> tuple[int, ...]:
    """``"0-1,3"`` -> ``(0, 1, 3)``. Raises ValueError naming the text when it is not a list
    of non-negative integers and ranges."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not _digits(lo) or (sep and not _digits(hi)):
            raise ValueError(f"invalid index list {text!r}: bad element {part!r}")
        if sep:
            a, b = int(lo), int(hi)
            if b < a or b - a > _MAX_RANGE:
                raise ValueError(f"invalid index list {text!r}: bad range {part!r}")
            out.extend(range(a, b + 1))
        else:
            out.append(int(lo))
    return tuple(out)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (s.strip() for s in parts) if p]


_BRACKET_RE = re.compile(r"([^\[\]]*)\[([^\[\]]+)\]([^\[\]]*)")


def expand_hostlist(hostlist: str) -> tuple[str, ...]:
    """Expand a Slurm hostlist: ``gpu[01-03,07],login1`` -> ``gpu01 gpu02 gpu03 gpu07 login1``.
    ``(null)`` and "" give ``()``. Raises ValueError naming the list when it cannot expand."""
    if hostlist in ("", "(null)", "None"):
        return ()
    out: list[str] = []
    for item in _split_top_level(hostlist):
        m = _BRACKET_RE.fullmatch(item)
        if m is None:
            if "[" in item or "]" in item:
                raise ValueError(f"invalid hostlist {hostlist!r}: cannot expand {item!r}")
            out.append(item)
            continue
        prefix, ranges, suffix = m.groups()
        for rng in ranges.split(","):
            lo, sep, hi = rng.partition("-")
            if not _digits(lo) or (sep and not _digits(hi)):
                raise ValueError(f"invalid hostlist {hostlist!r}: bad range {rng!r}")
            first, last = int(lo), int(hi if sep else lo)
            if last < first or last - first > _MAX_RANGE:
                raise ValueError(f"invalid hostlist {hostlist!r}: bad range {rng!r}")
            width = len(lo)
            out.extend(f"{prefix}{n:0{width}d}{suffix}" for n in range(first, last + 1))
    return tuple(out)
