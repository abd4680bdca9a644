"""``prometheus`` exporter: the collector's live state in Prometheus' text format, built
with ``prometheus_client`` at scrape time.

Per GPU, the series of Princeton Jobstats' GPU exporter, so a site's ``jobstats`` command
and Grafana panels keep working (scrape with ``honor_labels: true``; ``cluster`` comes from
the scrape config). Labels: ``instance`` = ``<node>:<instance_port>`` (Jobstats takes the
node from the text before the colon), ``minor_number`` (the N of /dev/nvidiaN, as NVML
gives it; the GPU index where the agent did not report it), ``uuid``, ``name``,
``jobid`` (empty when no job holds the GPU). Values are those of the GPU's newest report
window; a value that was not measured is left out, and a GPU whose newest window is older
than ``stale_after`` is not exported at all.

- ``nvidia_gpu_duty_cycle``: mean utilisation over the window, percent
- ``nvidia_gpu_memory_used_bytes`` (the window's maximum), ``nvidia_gpu_memory_total_bytes``
- ``nvidia_gpu_power_usage_milliwatts`` (window mean), ``nvidia_gpu_temperature_celsius``
- ``nvidia_gpu_num_devices`` per ``instance``

gpuwarden's own (the names :data:`GPUWARDEN_METRICS` lists): GPUs allocated / active / idle
(active: maximum utilisation at or above ``active_util_pct``), idle GPU-seconds by user
and account, findings and actions by kind, reports stored / duplicate / rejected (their
``rate`` is the ingest rate), age of each node's newest report (ingest lag), connected
nodes, Slurm availability per node, sink counters (delivered, queued, backlog, drops,
failures, healthy) and dropped alerts. Agents do not report their spool depth, so it is
not exported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector

from gpuwarden.collector.outputs.exporter import LiveView
from gpuwarden.common.config import build_section, duration_field, ranged

GPU_LABELS = ("instance", "minor_number", "uuid", "name", "jobid")

JOBSTATS_METRICS = (
    "nvidia_gpu_duty_cycle",
    "nvidia_gpu_memory_used_bytes",
    "nvidia_gpu_memory_total_bytes",
    "nvidia_gpu_power_usage_milliwatts",
    "nvidia_gpu_temperature_celsius",
    "nvidia_gpu_num_devices",
)

GPUWARDEN_METRICS = (
    "gpuwarden_gpus",
    "gpuwarden_gpus_allocated",
    "gpuwarden_gpus_active",
    "gpuwarden_gpus_idle",
    "gpuwarden_idle_gpu_seconds_total",
    "gpuwarden_findings_total",
    "gpuwarden_actions_total",
    "gpuwarden_reports_stored_total",
    "gpuwarden_reports_duplicate_total",
    "gpuwarden_reports_rejected_total",
    "gpuwarden_windows_in_store",
    "gpuwarden_node_connected",
    "gpuwarden_node_last_report_age_seconds",
    "gpuwarden_ingest_lag_seconds",
    "gpuwarden_node_slurm_available",
    "gpuwarden_sink_delivered_windows_total",
    "gpuwarden_sink_queued_windows",
    "gpuwarden_sink_backlog_windows",
    "gpuwarden_sink_dropped_windows_total",
    "gpuwarden_sink_failures_total",
    "gpuwarden_sink_healthy",
    "gpuwarden_alerts_dropped_total",
)
"""Every metric family this exporter serves (counters with their ``_total``)."""


@dataclass(frozen=True, slots=True)
class PrometheusOptions:
    instance_port: int = ranged(9445, minimum=1, maximum=65535)
    stale_after: float = duration_field(120.0, minimum=1.0)
    active_util_pct: float = ranged(5.0, minimum=0.0, maximum=100.0)


class PrometheusExporter:
    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self, opts: PrometheusOptions | None = None) -> None:
        self.opts = opts or PrometheusOptions()

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> PrometheusExporter:
        return cls(build_section(PrometheusOptions, f"exporters.{name}", options, environ={}))

    def render(self, view: LiveView) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(self.opts, view))
        return generate_latest(registry)


class _Families(PromCollector):
    """A one-scrape collector: the families of one :class:`LiveView`."""

    def __init__(self, opts: PrometheusOptions, view: LiveView) -> None:
        self.opts = opts
        self.view = view

    def collect(self) -> list[Metric]:
        return [*self._gpus(), *self._gpuwarden()]

    def _gpus(self) -> list[Metric]:
        g = {
            "util": GaugeMetricFamily(
                "nvidia_gpu_duty_cycle", "GPU utilisation, percent", labels=GPU_LABELS
            ),
            "mem": GaugeMetricFamily(
                "nvidia_gpu_memory_used_bytes", "GPU memory used, bytes", labels=GPU_LABELS
            ),
            "total": GaugeMetricFamily(
                "nvidia_gpu_memory_total_bytes", "GPU memory total, bytes", labels=GPU_LABELS
            ),
            "power": GaugeMetricFamily(
                "nvidia_gpu_power_usage_milliwatts", "GPU power, milliwatts", labels=GPU_LABELS
            ),
            "temp": GaugeMetricFamily(
                "nvidia_gpu_temperature_celsius", "GPU temperature, Celsius", labels=GPU_LABELS
            ),
        }
        devices = GaugeMetricFamily(
            "nvidia_gpu_num_devices", "GPUs on the node", labels=("instance",)
        )
        fresh_after = self.view.now - self.opts.stale_after
        for node in self.view.state.nodes():
            instance = f"{node.node}:{self.opts.instance_port}"
            fresh = [x for x in node.gpus if x.window_end >= fresh_after]
            if not fresh:
                continue
            devices.add_metric([instance], float(len(node.gpus)))
            for live in fresh:
                w = live.latest
                minor = w.minor_number if w.minor_number is not None else w.index
                labels = [instance, str(minor), w.uuid, w.name, w.job.job_id if w.job else ""]
                values = {
                    "util": w.util_mean,
                    "mem": w.mem_used_max_bytes,
                    "total": w.mem_total_bytes,
                    "power": None if w.power_mean_w is None else w.power_mean_w * 1000.0,
                    "temp": w.temperature_c,
                }
                for key, value in values.items():
                    if value is not None:
                        g[key].add_metric(labels, float(value))
        return [*g.values(), devices]

    def _gpuwarden(self) -> list[Metric]:
        v = self.view
        threshold = self.opts.active_util_pct
        total = allocated = active = idle = 0
        connected = GaugeMetricFamily(
            "gpuwarden_node_connected", "1 while the node's agent is connected", labels=("node",)
        )
        age = GaugeMetricFamily(
            "gpuwarden_node_last_report_age_seconds",
            "Seconds since the end of the node's newest stored window",
            labels=("node",),
        )
        slurm = GaugeMetricFamily(
            "gpuwarden_node_slurm_available",
            "1 when the node's agent could read Slurm for its last report",
            labels=("node",),
        )
        lag = 0.0
        fresh_after = v.now - self.opts.stale_after
        for node in v.state.nodes():
            connected.add_metric([node.node], float(node.connected))
            if node.last_seen:
                age.add_metric([node.node], max(0.0, v.now - node.last_seen))
                slurm.add_metric([node.node], float(node.slurm.available))
                if node.connected:
                    lag = max(lag, v.now - node.last_seen)
            for live in node.gpus:
                if live.window_end < fresh_after:
                    continue
                total += 1
                if live.latest.allocated:
                    allocated += 1
                    util = live.latest.util_max
                    if util is not None and util >= threshold:
                        active += 1
                    elif util is not None:
                        idle += 1
        out: list[Metric] = [
            GaugeMetricFamily("gpuwarden_gpus", "GPUs reporting", value=total),
            GaugeMetricFamily(
                "gpuwarden_gpus_allocated", "GPUs allocated to a job", value=allocated
            ),
            GaugeMetricFamily(
                "gpuwarden_gpus_active",
                "Allocated GPUs active in their newest window",
                value=active,
            ),
            GaugeMetricFamily(
                "gpuwarden_gpus_idle", "Allocated GPUs idle in their newest window", idle
            ),
            connected,
            age,
            slurm,
            GaugeMetricFamily(
                "gpuwarden_ingest_lag_seconds",
                "Age of the oldest newest-window among connected nodes",
                value=lag,
            ),
            GaugeMetricFamily(
                "gpuwarden_windows_in_store", "Raw windows in SQLite", value=v.windows_stored
            ),
        ]
        idle_s = CounterMetricFamily(
            "gpuwarden_idle_gpu_seconds",
            "GPU-seconds allocated but idle, by user and account",
            labels=("user", "account"),
        )
        for (user, account), seconds in sorted(v.idle_gpu_seconds.items()):
            idle_s.add_metric([user, account], seconds)
        findings = CounterMetricFamily(
            "gpuwarden_findings", "Audit records (findings) by kind", labels=("kind",)
        )
        actions = CounterMetricFamily(
            "gpuwarden_actions",
            "Ladder actions (warnings, releases, requeues, cancels) by kind and outcome",
            labels=("kind", "action", "outcome", "dry_run"),
        )
        by_kind: dict[str, int] = {}
        for key, n in sorted(v.audit_counts.items(), key=lambda kv: str(kv[0])):
            by_kind[key.kind] = by_kind.get(key.kind, 0) + n
            if key.action != "none":
                actions.add_metric([key.kind, key.action, key.outcome, str(key.dry_run).lower()], n)
        for kind, n in sorted(by_kind.items()):
            findings.add_metric([kind], n)
        out += [idle_s, findings, actions]
        for name, value, doc in (
            ("gpuwarden_reports_stored", v.reports_stored, "Reports stored"),
            ("gpuwarden_reports_duplicate", v.reports_duplicate, "Reports already stored"),
            ("gpuwarden_reports_rejected", v.reports_rejected, "Reports refused as invalid"),
            ("gpuwarden_alerts_dropped", v.alerts_dropped, "Alerts dropped, queue full"),
        ):
            out.append(CounterMetricFamily(name, doc, value=value))
        out += _sinks(v)
        return out


def _sinks(v: LiveView) -> list[Metric]:
    sink = ("sink",)
    delivered = CounterMetricFamily(
        "gpuwarden_sink_delivered_windows", "Windows the sink took", labels=sink
    )
    queued = GaugeMetricFamily("gpuwarden_sink_queued_windows", "Windows in memory", labels=sink)
    backlog = GaugeMetricFamily(
        "gpuwarden_sink_backlog_windows", "Windows in the on-disk backlog", labels=sink
    )
    dropped = CounterMetricFamily(
        "gpuwarden_sink_dropped_windows",
        "Windows dropped: queue full, or oldest backlog beyond its bound",
        labels=("sink", "reason"),
    )
    failures = CounterMetricFamily(
        "gpuwarden_sink_failures", "Failed open or write calls", labels=sink
    )
    healthy = GaugeMetricFamily(
        "gpuwarden_sink_healthy", "1 when the last write succeeded", labels=sink
    )
    for s in v.sinks:
        delivered.add_metric([s.name], s.delivered)
        queued.add_metric([s.name], s.queued)
        backlog.add_metric([s.name], s.backlog)
        dropped.add_metric([s.name, "queue_full"], s.dropped_queue_full)
        dropped.add_metric([s.name, "backlog_full"], s.dropped_backlog)
        failures.add_metric([s.name], s.failures)
        healthy.add_metric([s.name], float(s.healthy))
    return [delivered, queued, backlog, dropped, failures, healthy]
