"""The ``Sink`` plug-in interface and the name -> factory registry.

A sink receives stored windows in batches. It only has to write a batch or raise: buffering,
batching, retry with backoff, the on-disk backlog and the drop counts belong to
:class:`~gpuwarden.collector.outputs.running.RunningSink`, which wraps every sink.

A new sink is one module with a class that has ``open / write(batch) / close`` and a factory
taking (:class:`SinkContext`, its options from ``[sinks.NAME]``), plus one line in
:data:`SINKS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gpuwarden.common.types import WindowRecord


class Sink(Protocol):
    def open(self) -> None:
        """Connect or open files; raise to have the wrapper retry later."""

    def write(self, batch: Sequence[WindowRecord]) -> None:
        """Write the whole batch, or raise: the wrapper keeps it and retries it later."""

    def close(self) -> None:
        """Release what ``open`` took; safe to call twice."""


@dataclass(frozen=True, slots=True)
class SinkContext:
    name: str  # the instance name, from [sinks.NAME]
    state_dir: Path  # the collector's state folder: relative paths resolve here


SinkFactory = Callable[[SinkContext, Mapping[str, Any]], Sink]


def _jsonl(ctx: SinkContext, options: Mapping[str, Any]) -> Sink:
    from gpuwarden.collector.outputs.jsonl import JsonlSink

    return JsonlSink.from_options(ctx, options)


def _influxdb(ctx: SinkContext, options: Mapping[str, Any]) -> Sink:
    try:
        from gpuwarden.collector.outputs.influx import InfluxSink
    except ImportError as exc:  # the optional extra is not installed
        raise ValueError(
            f"needs influxdb-client (pip install 'gpuwarden[influxdb]'): {exc}"
        ) from None
    return InfluxSink.from_options(ctx, options)


SINKS: dict[str, SinkFactory] = {
    "jsonl": _jsonl,  # windows as JSON lines in a file, rotated by size
    "influxdb": _influxdb,  # line protocol: InfluxDB 2/3, VictoriaMetrics
}
