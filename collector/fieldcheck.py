"""Tables of field checks, compiled into one straight pass over a received message.

A message type's scalar fields are listed once, in a table of :class:`Check` rows (which
field, what it must be, and how a failure reads). From that table come two functions:

- the *reader* (generated source, compiled once): reads every field of the message once,
  tests it with one inline comparison, and returns the values in table order, ready for the
  domain type's constructor. A field that is absent on the wire (``optional`` in the
  .proto) comes back as None, never 0;
- the *explainer*: when the reader meets a value it cannot accept, it calls this, which
  walks the same rows slowly and raises :class:`ReportInvalid` naming the first bad field
  and its value, as the collector always has.

So the bound of every field lives in one row, the fast path builds no object it throws
away, and the error message is the careful one. Identities that passed once (a GPU's UUID,
a job's user) are remembered in a bounded set per row, so the next report of the same GPU
skips the pattern match.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

# C0, DEL, C1, soft hyphen, and the bidirectional / invisible format characters
# (ALM, Mongolian vowel separator, zero-width, LRM/RLM, embeddings/overrides, isolates, BOM).
# Every one of them is non-printable to str.isprintable(), so printable text skips the search.
UNSAFE_TEXT_RE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)

# Identities remembered per row before the set starts again: the GPUs of 4,000 8-GPU nodes;
# a few MiB per row at most, however many distinct names a hostile sender invents.
KNOWN_MAX = 1 << 15


class ReportInvalid(ValueError):
    """The report breaks a bound; the message names the field and the value."""


def text_ok(value: str) -> bool:
    """Free text: no control characters, bidirectional marks or invisible format marks."""
    return value.isprintable() or UNSAFE_TEXT_RE.search(value) is None


def check_real(where: str, value: float, lo: float, hi: float) -> None:
    if not math.isfinite(value):
        raise ReportInvalid(f"{where}={value} is not a finite number")
    if value < lo or value > hi:
        raise ReportInvalid(f"{where}={value} is outside [{lo:g}, {hi:g}]")


def check_integer(where: str, value: int, lo: int, hi: int) -> None:
    if value < lo or value > hi:
        raise ReportInvalid(f"{where}={value} is outside [{lo}, {hi}]")


def check_text(where: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ReportInvalid(f"{where} is {len(value)} characters long (limit {limit})")
    if not text_ok(value):
        raise ReportInvalid(f"{where} contains control characters or bidirectional marks")


Bound = float | str  # a number, or the name of a :class:`Bounds` attribute


@dataclass(frozen=True, slots=True)
class Bounds:
    """The limits of one report, computed once per report from the collector's settings and
    clock, and read by the rows that name them."""

    text: int  # characters of free text
    samples: int  # samples in one window
    power_w: float
    start_time: int  # a job's start, Unix seconds


@dataclass(frozen=True, slots=True)
class Check:
    """One scalar field and what it must be.

    ``kind``: ``real`` (finite, within [lo, hi]), ``integer`` (within [lo, hi]), ``text``
    (free text of at most ``hi`` characters), ``identity`` (``ok`` accepts it; empty is
    allowed unless ``required``), ``any`` (taken as it is: booleans).
    ``optional``: the field has presence on the wire; absent is None.
    ``message``: for an identity or an integer, what a failure says after ``where=value``.
    ``shown``: how many characters of a bad identity the message quotes.
    """

    name: str
    kind: str
    lo: Bound = 0
    hi: Bound = 0
    optional: bool = False
    ok: Callable[[str], object] | None = None
    required: bool = False
    message: str = ""
    shown: int = 80
    known: set[str] = field(default_factory=set, compare=False, repr=False)


def real(name: str, lo: Bound, hi: Bound, *, optional: bool = True) -> Check:
    return Check(name, "real", lo, hi, optional=optional)


def integer(name: str, lo: Bound, hi: Bound, *, optional: bool = False, message: str = "") -> Check:
    return Check(name, "integer", lo, hi, optional=optional, message=message)


def text(name: str, limit: Bound = "text") -> Check:
    return Check(name, "text", 0, limit)


def identity(
    name: str, ok: Callable[[str], object], what: str, *, required: bool = False, shown: int = 80
) -> Check:
    return Check(name, "identity", ok=ok, required=required, message=f"is not {what}", shown=shown)


def plain(name: str) -> Check:
    return Check(name, "any")


def _bound(b: Bound, bounds: Bounds) -> Any:
    return getattr(bounds, b) if isinstance(b, str) else b


def _bound_src(b: Bound) -> str:
    return f"b.{b}" if isinstance(b, str) else repr(b)


def explain(where: str, msg: Any, checks: Sequence[Check], bounds: Bounds) -> NoReturn:
    """Raise :class:`ReportInvalid` for the first field of ``msg`` that breaks its row."""
    for c in checks:
        if c.optional and not msg.HasField(c.name):
            continue
        value = getattr(msg, c.name)
        at = f"{where}.{c.name}"
        lo, hi = _bound(c.lo, bounds), _bound(c.hi, bounds)
        if c.kind == "real":
            check_real(at, value, lo, hi)
        elif c.kind == "integer" and not lo <= value <= hi:
            if c.message:
                raise ReportInvalid(f"{at}={value} {c.message}")
            check_integer(at, value, lo, hi)
        elif c.kind == "text":
            check_text(at, value, hi)
        elif c.kind == "identity" and (value or c.required) and not (c.ok and c.ok(value)):
            raise ReportInvalid(f"{at}={value[: c.shown]!r} {c.message}")
    raise ReportInvalid(f"{where} is not valid")  # a reader and its rows disagree


def remember(known: set[str], ok: Callable[[str], object], value: str) -> bool:
    """``ok(value)``, remembering a value that passed (a bounded set: it starts again when
    full, so a sender of endless distinct names costs time, never memory)."""
    if not ok(value):
        return False
    if len(known) >= KNOWN_MAX:
        known.clear()
    known.add(value)
    return True


Reader = Callable[[Any, Bounds, Any], tuple[Any, ...]]
OnBad = Callable[[Any, Bounds, Any], NoReturn]


def compile_reader(type_name: str, checks: Sequence[Check], on_bad: OnBad) -> Reader:
    """The fast reader of ``checks``: ``reader(msg, bounds, at)`` returns the fields' values
    in table order; at the first bad one it calls ``on_bad(msg, bounds, at)``, which must
    raise (``at`` tells it where the message sits in the report)."""
    env: dict[str, Any] = {"text_ok": text_ok, "remember": remember, "fail": on_bad}
    lines = [f"def read_{type_name}(m, b, at):"]
    names = []
    for i, c in enumerate(checks):
        v = f"v{i}"
        names.append(v)
        lines.append(f"    {v} = m.{c.name}")
        lo, hi = _bound_src(c.lo), _bound_src(c.hi)
        if c.kind in ("real", "integer"):
            bad = f"not ({lo} <= {v} <= {hi})"
        elif c.kind == "text":
            bad = f"len({v}) > {hi} or not text_ok({v})"
        elif c.kind == "identity":
            env[f"ok{i}"], env[f"known{i}"] = c.ok, c.known
            bad = f"{v} not in known{i} and not remember(known{i}, ok{i}, {v})"
            if not c.required:
                bad = f"{v} and {bad}"
        else:
            bad = ""
        if c.optional:
            # A value other than 0 is present; only a 0 needs asking whether it was sent.
            lines.append(f"    if not {v} and not m.HasField({c.name!r}):")
            lines.append(f"        {v} = None")
            if bad:
                lines.append(f"    elif {bad}:")
                lines.append("        fail(m, b, at)")
        elif bad:
            lines.append(f"    if {bad}:")
            lines.append("        fail(m, b, at)")
    lines.append(f"    return ({', '.join(names)},)")
    source = "\n".join(lines) + "\n"
    code = compile(source, f"<field checks of {type_name}>", "exec")
    exec(code, env)  # noqa: S102 (source built above from the fixed tables of this package)
    reader: Reader = env[f"read_{type_name}"]
    reader.source = source  # type: ignore[attr-defined]  # for reading, in a debugger
    return reader


Builder = Callable[..., Any]


def compile_builder(cls: type, names: Sequence[str]) -> Builder:
    """A constructor of the frozen, slotted dataclass ``cls`` taking its fields ``names``
    positionally (every field, in this order), about twice as fast as ``cls(...)``: it sets
    each slot through its descriptor instead of ``object.__setattr__`` per field. For values
    the caller has already checked: it runs no ``__post_init__`` and fills no defaults."""
    fields = getattr(cls, "__dataclass_fields__", {})
    if set(names) != set(fields) or len(names) != len(fields):
        raise TypeError(f"{cls.__name__}: give every field once ({sorted(fields)})")
    env: dict[str, Any] = {"new": object.__new__, "cls": cls}
    lines = [f"def build_{cls.__name__}({', '.join(names)}):", "    o = new(cls)"]
    for n in names:
        env[f"set_{n}"] = cls.__dict__[n].__set__
        lines.append(f"    set_{n}(o, {n})")
    lines.append("    return o")
    exec(compile("\n".join(lines) + "\n", f"<builder of {cls.__name__}>", "exec"), env)  # noqa: S102
    builder: Builder = env[f"build_{cls.__name__}"]
    return builder
