"""Configuration: one TOML file, overridable by ``GPUWARDEN_<SECTION>_<KEY>`` variables.

Each section is a frozen dataclass. :func:`build_section` checks every key and value and
raises :class:`ConfigError` naming the key (``[agent] report_interval``) and the reason, so a
bad config fails at start, never later.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from gpuwarden.common.durations import parse_duration

ENV_PREFIX = "GPUWARDEN_"
# Every top-level table a gpuwarden config file may hold: one file can serve the agent, the
# collector, its policy and outputs; any other name is a mistake worth stopping for. A new
# section is added here.
CONFIG_SECTIONS = ("agent", "collector", "policy", "sinks", "notifiers")
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


def duration_field(default: float, *, minimum: float = 0.0, maximum: float | None = None) -> Any:
    """A dataclass field holding seconds, written as ``30``, ``"90s"``, ``"15m"`` or ``"2h"``."""
    return dataclasses.field(
        default=default, metadata={"duration": True, "min": minimum, "max": maximum}
    )


def ranged(default: Any, *, minimum: float | None = None, maximum: float | None = None) -> Any:
    return dataclasses.field(default=default, metadata={"min": minimum, "max": maximum})


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` is most likely a misspelling of, if any is close enough."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), by_lower, n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def check_sections(doc: Mapping[str, Any], path: Path) -> None:
    """Refuse any top-level name of ``doc`` that is not one of :data:`CONFIG_SECTIONS`
    (a misspelt ``[polcy]`` would otherwise be ignored and the defaults run)."""
    known = ", ".join(f"[{s}]" for s in CONFIG_SECTIONS)
    for key, value in doc.items():
        if key in CONFIG_SECTIONS:
            continue
        if not isinstance(value, dict):
            raise ConfigError(
                f"{path}: {key}: a setting outside any section (settings belong in {known})"
            )
        near = did_you_mean(key, CONFIG_SECTIONS)
        hint = f", did you mean [{near}]?" if near else f" (known: {known})"
        raise ConfigError(f"{path}: [{key}]: unknown section{hint}")


def env_overrides(section: str, cls: type[Any], environ: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        var = f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}"
        if var in environ:
            out[f.name] = environ[var]
    return out


def _coerce(where: str, f: dataclasses.Field[Any], hint: Any, raw: Any, from_env: bool) -> Any:
    meta = f.metadata
    if meta.get("duration"):
        try:
            value: Any = parse_duration(raw, what=where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    else:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin in (types.UnionType, typing.Union) and type(None) in args:
            if raw is None or (from_env and raw == ""):
                return None
            hint = next(a for a in args if a is not type(None))
            origin = typing.get_origin(hint)
        value = _coerce_plain(where, hint, origin, raw, from_env)
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if lo is not None and value < lo:
            raise ConfigError(f"{where}: {raw!r} is below the minimum {lo}")
        if hi is not None and value > hi:
            raise ConfigError(f"{where}: {raw!r} is above the maximum {hi}")
    return value


def _coerce_plain(where: str, hint: Any, origin: Any, raw: Any, from_env: bool) -> Any:
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if from_env and isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
            return True
        if from_env and isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    if hint is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{where}: expected an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        if from_env and isinstance(raw, str):
            try:
                return int(raw)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {raw!r}")
    if hint is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
        elif from_env and isinstance(raw, str):
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {raw!r}") from None
        else:
            raise ConfigError(f"{where}: expected a number, got {raw!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {raw!r} is not a finite number")
        return value
    if hint is str:
        if isinstance(raw, str):
            return raw
        raise ConfigError(f"{where}: expected a string, got {raw!r}")
    if hint is Path:
        if isinstance(raw, str) and raw:
            return Path(raw)
        raise ConfigError(f"{where}: expected a path, got {raw!r}")
    if origin is tuple:
        items = raw.split(",") if from_env and isinstance(raw, str) else raw
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where}: expected a list of strings, got {raw!r}")
        return tuple(i.strip() for i in items if i.strip())
    raise ConfigError(f"{where}: unsupported setting type {hint!r}")  # pragma: no cover


def load_section(
    cls: type[T],
    section: str,
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> T:
    """One section of a gpuwarden config file (every section name checked), then the
    environment and ``flags``: :func:`build_section` over the file's ``[section]`` table."""
    data: dict[str, Any] = {}
    if path is not None:
        doc = read_toml(path)
        check_sections(doc, path)
        table = doc.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table")
        data.update(table)
    return build_section(cls, section, data, environ, flags)


def build_section(
    cls: type[T],
    section: str,
    data: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> T:
    """Build dataclass ``cls`` from a TOML table, then environment overrides, then command
    line ``flags`` (None values ignored): each later source wins."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    data = {**dict(data or {}), **flags}
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            near = did_you_mean(key, known)
            hint = f", did you mean {near}?" if near else f" (known: {', '.join(sorted(known))})"
            raise ConfigError(f"[{section}] {key}: unknown setting{hint}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    env = env_overrides(section, cls, os.environ if environ is None else environ)
    for name, f in known.items():
        if name in env and name not in flags:
            kwargs[name] = _coerce(
                f"{ENV_PREFIX}{section.upper()}_{name.upper()}", f, hints[name], env[name], True
            )
        elif name in data:
            kwargs[name] = _coerce(f"[{section}] {name}", f, hints[name], data[name], False)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"[{section}] {exc}") from None
