"""``[sinks.NAME]``, ``[notifiers.NAME]`` and ``[exporters.NAME]`` tables of the
collector's config file.

Each table names one instance; ``type`` picks the factory from the registry (default: the
instance name, so ``[sinks.jsonl]`` is a ``jsonl`` sink). The sink wrapper's keys
(:class:`~gpuwarden.collector.outputs.running.SinkSettings`), or an exporter's HTTP
endpoint keys (:class:`~gpuwarden.collector.outputs.http.EndpointSettings`), and the
plug-in's own options share the table; anything else is an error naming the key. These
tables are not overridden by environment variables.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gpuwarden.collector.outputs.exporter import EXPORTERS
from gpuwarden.collector.outputs.http import EndpointSettings, ExporterEndpoint
from gpuwarden.collector.outputs.notify import NOTIFIERS, Notifier, NotifierContext, NotifierHub
from gpuwarden.collector.outputs.running import RunningSink, SinkSet, SinkSettings
from gpuwarden.collector.outputs.sink import SINKS, SinkContext
from gpuwarden.common.config import ConfigError, build_section, read_toml

T = TypeVar("T")

_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(slots=True)
class Outputs:
    sinks: SinkSet = field(default_factory=SinkSet)
    notifiers: NotifierHub = field(default_factory=NotifierHub)
    exporters: list[ExporterEndpoint] = field(default_factory=list)


def plugin_tables(doc: Mapping[str, Any], section: str) -> list[tuple[str, dict[str, Any]]]:
    raw = doc.get(section, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"[{section}] must be a table of [{section}.NAME] tables")
    out: list[tuple[str, dict[str, Any]]] = []
    for name, table in raw.items():
        if not _INSTANCE.fullmatch(name):
            raise ConfigError(
                f"[{section}.{name[:64]}]: a name is 1-64 letters, digits, _ or - "
                "(starting with a letter or digit)"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}.{name}] must be a table")
        out.append((name, table))
    return out


def _pick(section: str, name: str, kind: str, registry: Mapping[str, Any], type_: str) -> Any:
    factory = registry.get(type_)
    if factory is None:
        raise ConfigError(
            f"[{section}.{name}] type: {type_!r} is not a known {kind} "
            f"(known: {', '.join(sorted(registry)) or 'none'})"
        )
    return factory


def _build(section: str, name: str, build: Any, *args: Any) -> Any:
    try:
        return build(*args)
    except ConfigError:
        raise
    except (ValueError, OSError) as exc:
        raise ConfigError(f"[{section}.{name}] {exc}") from None


def _split(
    section: str, name: str, table: Mapping[str, Any], cls: type[T]
) -> tuple[T, dict[str, Any]]:
    """The wrapper's settings (``cls``) from a plug-in table, and the plug-in's own options."""
    keys = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    mine = {k: v for k, v in table.items() if k in keys}
    settings = build_section(cls, f"{section}.{name}", mine, environ={})
    return settings, {k: v for k, v in table.items() if k not in keys}


def load_sinks(doc: Mapping[str, Any], state_dir: Path) -> SinkSet:
    running: list[RunningSink] = []
    for name, table in plugin_tables(doc, "sinks"):
        settings, options = _split("sinks", name, table, SinkSettings)
        factory = _pick("sinks", name, "sink", SINKS, settings.type or name)
        sink = _build("sinks", name, factory, SinkContext(name, state_dir), options)
        backlog = state_dir / "sinks" / name / "backlog"
        running.append(_build("sinks", name, RunningSink, name, sink, settings, backlog))
    return SinkSet(running)


def load_notifiers(doc: Mapping[str, Any], state_dir: Path) -> NotifierHub:
    built: list[tuple[str, Notifier]] = []
    for name, table in plugin_tables(doc, "notifiers"):
        options = dict(table)
        type_ = options.pop("type", name)
        if not isinstance(type_, str):
            raise ConfigError(f"[notifiers.{name}] type: expected a string, got {type_!r}")
        factory = _pick("notifiers", name, "notifier", NOTIFIERS, type_)
        ctx = NotifierContext(name, state_dir)
        built.append((name, _build("notifiers", name, factory, ctx, options)))
    return NotifierHub(built)


def load_exporters(doc: Mapping[str, Any]) -> list[ExporterEndpoint]:
    out: list[ExporterEndpoint] = []
    for name, table in plugin_tables(doc, "exporters"):
        settings, options = _split("exporters", name, table, EndpointSettings)
        factory = _pick("exporters", name, "exporter", EXPORTERS, settings.type or name)
        exporter = _build("exporters", name, factory, name, options)
        out.append(_build("exporters", name, ExporterEndpoint, name, exporter, settings))
    return out


def load_outputs(path: Path | None, state_dir: Path) -> Outputs:
    """Sinks, notifiers and exporters configured in the collector's config file (none
    without one)."""
    if path is None:
        return Outputs()
    doc = read_toml(path)
    return Outputs(
        sinks=load_sinks(doc, state_dir),
        notifiers=load_notifiers(doc, state_dir),
        exporters=load_exporters(doc),
    )
