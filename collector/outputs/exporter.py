"""The ``Exporter`` plug-in interface: live state rendered when a scraper asks.

An exporter holds nothing of its own: each scrape calls :meth:`Exporter.render` with a
:class:`LiveView` of the collector at that moment (the live cluster state, the sinks'
and notifiers' counters) and serves the bytes it returns with its ``content_type``. The
HTTP endpoint that serves them (and its TLS and authentication) is the exporter's
business; a Prometheus ``/metrics`` exporter is a module with a class like::

    class PrometheusExporter:
        content_type = "text/plain; version=0.0.4"

        def render(self, view: LiveView) -> bytes:
            ...  # one series per GPU of view.state.nodes(), sink drops from view.sinks

plus one line in :data:`EXPORTERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gpuwarden.collector.accounting import AuditKey
from gpuwarden.collector.outputs.notify import NotifierStats
from gpuwarden.collector.outputs.running import SinkStats
from gpuwarden.collector.state import ClusterState


@dataclass(frozen=True, slots=True)
class LiveView:
    """The collector as a scrape sees it."""

    now: float
    state: ClusterState  # newest window of every GPU, per node
    windows_stored: int
    sinks: tuple[SinkStats, ...] = ()
    notifiers: tuple[NotifierStats, ...] = ()
    alerts_dropped: int = 0
    reports_stored: int = 0
    reports_duplicate: int = 0
    reports_rejected: int = 0
    idle_gpu_seconds: Mapping[tuple[str, str], float] = field(default_factory=dict)  # user, account
    audit_counts: Mapping[AuditKey, int] = field(default_factory=dict)


class Exporter(Protocol):
    content_type: str

    def render(self, view: LiveView) -> bytes:
        """The exposition of ``view``; called on every scrape, from any thread."""


ExporterFactory = Callable[[str, Mapping[str, Any]], Exporter]


def _prometheus(name: str, options: Mapping[str, Any]) -> Exporter:
    from gpuwarden.collector.outputs.prometheus import PrometheusExporter

    return PrometheusExporter.from_options(name, options)


EXPORTERS: dict[str, ExporterFactory] = {
    "prometheus": _prometheus,  # /metrics: Jobstats' GPU series and gpuwarden_*
}
