"""``influxdb`` sink: every stored window as one line-protocol point, through
``influxdb-client`` (InfluxDB 2 and 3, a VictoriaMetrics single node or cluster).

One point per GPU per report window, at the window's end (millisecond precision):

- measurement: ``measurement`` (default ``gpuwarden_gpu``);
- tags (strings only go here; empty ones are left out): ``cluster`` (the option), ``node``,
  ``uuid``, ``index``, ``name`` (GPU model), ``parent_uuid`` (MIG), ``job``, ``user``,
  ``account``, ``partition``;
- fields (numbers; a value that was not measured is left out, never 0): ``samples``,
  ``allocated`` (0/1), ``processes`` (count), ``util_mean``, ``util_max``, ``util_min``,
  ``zero_frac``, ``mem_util_mean`` (percent), ``mem_used_max_bytes``, ``mem_total_bytes``,
  ``power_mean_w``, ``temperature_c``, and every extra GPU field as ``<name>_mean`` and
  ``<name>_max``.

VictoriaMetrics names each series ``<measurement>_<field>`` (``gpuwarden_gpu_util_mean``)
with the tags as labels.

Options in ``[sinks.NAME]``: ``url`` (required; for a VictoriaMetrics cluster the vminsert
prefix, ``http://vminsert:8480/insert/0/influx``), ``org``, ``bucket`` (InfluxDB 3: the
database), ``token`` or ``token_file`` (a file holding it, so the config file can stay
world-readable), ``cluster``, ``measurement``, ``timeout`` (default 10 s), ``ssl_ca_cert``,
``verify_ssl`` (default true). Writes are synchronous and never retried here: a failed
write raises, and :class:`~gpuwarden.collector.outputs.running.RunningSink` keeps the batch
in its on-disk backlog and retries it (the client itself would only buffer in memory).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.domain.write_precision import WritePrecision

from gpuwarden.collector.outputs.sink import SinkContext
from gpuwarden.common.config import build_section, duration_field
from gpuwarden.common.types import WindowRecord

_MEASUREMENT = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}")

_NUMBER_FIELDS = (
    "util_mean",
    "util_max",
    "util_min",
    "zero_frac",
    "mem_util_mean",
    "mem_used_max_bytes",
    "mem_total_bytes",
    "power_mean_w",
    "temperature_c",
)


@dataclass(frozen=True, slots=True)
class InfluxOptions:
    url: str = ""
    org: str = ""
    bucket: str = "gpuwarden"
    token: str = ""
    token_file: str = ""
    cluster: str = ""
    measurement: str = "gpuwarden_gpu"
    timeout: float = duration_field(10.0, minimum=0.1)
    ssl_ca_cert: str = ""
    verify_ssl: bool = True

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url: {self.url!r} is not an http:// or https:// URL")
        if not _MEASUREMENT.fullmatch(self.measurement):
            raise ValueError(
                f"measurement: {self.measurement!r} is not a name (letters, digits, _)"
            )
        if self.token and self.token_file:
            raise ValueError("give token or token_file, not both")
        if not self.bucket:
            raise ValueError("bucket must not be empty")


def window_point(record: WindowRecord, measurement: str, cluster: str = "") -> Point:
    """The line-protocol point of one stored window."""
    g = record.gpu
    p = Point(measurement)
    job = g.job
    tags = {
        "cluster": cluster,
        "node": record.node,
        "uuid": g.uuid,
        "index": str(g.index),
        "name": g.name,
        "parent_uuid": g.parent_uuid,
        "job": job.job_id if job else "",
        "user": job.user if job else "",
        "account": job.account if job else "",
        "partition": job.partition if job else "",
    }
    for key, tag in tags.items():
        if tag:
            p.tag(key, tag)
    p.field("samples", g.samples)
    p.field("allocated", int(g.allocated))
    p.field("processes", len(g.processes))
    for name in _NUMBER_FIELDS:
        value = getattr(g, name)
        if value is not None:
            p.field(name, float(value) if isinstance(value, float) else value)
    for name, x in g.extra_mean.items():
        p.field(f"{name}_mean", float(x))
    for name, x in g.extra_max.items():
        p.field(f"{name}_max", float(x))
    p.time(round(record.window_end * 1000), WritePrecision.MS)
    return p


class InfluxSink:
    def __init__(self, opts: InfluxOptions, token: str) -> None:
        self.opts = opts
        self._token = token
        self._client: InfluxDBClient | None = None
        self._write: WriteApi | None = None

    @classmethod
    def from_options(cls, ctx: SinkContext, options: Mapping[str, Any]) -> InfluxSink:
        opts = build_section(InfluxOptions, f"sinks.{ctx.name}", options, environ={})
        token = opts.token
        if opts.token_file:
            path = Path(opts.token_file)
            if not path.is_absolute():
                path = ctx.state_dir / path
            token = path.read_text().strip()
        return cls(opts, token)

    def open(self) -> None:
        settings: dict[str, Any] = {
            "url": self.opts.url,
            "timeout": round(self.opts.timeout * 1000),
            "verify_ssl": self.opts.verify_ssl,
            "retries": False,  # the sink wrapper retries, from its on-disk backlog
        }
        if self._token:
            settings["token"] = self._token
        if self.opts.org:
            settings["org"] = self.opts.org
        if self.opts.ssl_ca_cert:
            settings["ssl_ca_cert"] = self.opts.ssl_ca_cert
        self._client = InfluxDBClient(**settings)
        self._write = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, batch: Sequence[WindowRecord]) -> None:
        if self._write is None:
            raise RuntimeError(f"{self.opts.url}: write before open")
        points = [window_point(r, self.opts.measurement, self.opts.cluster) for r in batch]
        self._write.write(
            bucket=self.opts.bucket,
            org=self.opts.org or "-",
            record=points,  # each point carries its precision (ms)
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._write = None
