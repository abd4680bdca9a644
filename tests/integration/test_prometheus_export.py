"""``/metrics`` scraped by a real Prometheus (Debian's): Jobstats' GPU series and labels,
the exact query ``jobstats`` runs for one job's utilisation, gpuwarden's own series, basic
auth; and the endpoint over TLS."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

from gpuwarden.agent.attribution import Attribution, GpuAttribution
from gpuwarden.collector.outputs.exporter import LiveView
from gpuwarden.collector.outputs.http import EndpointSettings, ExporterEndpoint
from gpuwarden.collector.outputs.prometheus import PrometheusExporter
from gpuwarden.collector.server import Collector
from gpuwarden.collector.state import ClusterState
from gpuwarden.common.types import GpuSample, JobInfo
from tests.exportsvc import Server, start_prometheus
from tests.helpers import running_agent, wait_for, wait_for_sync
from tests.pki import TestCA

# Two GPUs of node gpu07: GPU 0 busy at a steady 73 % for job 4242 (alice), GPU 1
# allocated to job 4243 (bob) and idle, holding memory.
UTIL = {0: 73.0, 1: 0.0}
JOBS = {
    0: JobInfo(job_id="4242", user="alice", account="physics", partition="gpu"),
    1: JobInfo(job_id="4243", user="bob", account="chem", partition="gpu"),
}


class SteadySampler:
    def open(self) -> None:
        pass

    def sample(self, now: float) -> list[GpuSample]:
        return [
            GpuSample(
                uuid=f"GPU-0000000{i}-feed",
                index=i,
                name="NVIDIA A100-SXM4-80GB",
                util_gpu_pct=UTIL[i],
                util_mem_pct=UTIL[i] / 2,
                mem_used_bytes=(10 + i) << 30,
                mem_total_bytes=80 << 30,
                power_w=250.5 if i == 0 else 60.0,
                temperature_c=61.0 + i,
            )
            for i in (0, 1)
        ]

    def close(self) -> None:
        pass


class JobAttributor:
    def attribute(self, samples: Sequence[GpuSample]) -> Attribution:
        return Attribution(
            gpus={s.uuid: GpuAttribution(job=JOBS[s.index], allocated=True) for s in samples}
        )


def scrape_config(port: int, password_file: Path | None = None, tls_ca: Path | None = None) -> str:
    lines = [
        "global:",
        "  scrape_interval: 1s",
        "  evaluation_interval: 1s",
        "scrape_configs:",
        "  - job_name: gpuwarden",
        "    honor_labels: true",
    ]
    if password_file is not None:
        lines += [
            "    basic_auth:",
            "      username: prom",
            f"      password_file: {password_file}",
        ]
    if tls_ca is not None:
        lines += ["    scheme: https", "    tls_config:", f"      ca_file: {tls_ca}"]
    lines += [
        "    static_configs:",
        f"      - targets: ['127.0.0.1:{port}']",
        "        labels:",
        "          cluster: C",
    ]
    return "\n".join(lines) + "\n"


def values(prom: Server, promql: str) -> dict[str, float]:
    """Instant query -> {uuid or '' : value}."""
    return {r["metric"].get("uuid", ""): float(r["value"][1]) for r in prom.query(promql)}


async def test_prometheus_scrapes_jobstats_series_and_jobstats_query_reads_the_job_mean(
    tmp_path: Path, collector: Collector
) -> None:
    password = tmp_path / "metrics.password"
    password.write_text("s3cret\n")
    endpoint = ExporterEndpoint(
        "metrics",
        PrometheusExporter(),
        EndpointSettings(
            listen="127.0.0.1:0", basic_auth_user="prom", basic_auth_password_file=str(password)
        ),
    )
    endpoint.start(collector.live_view)
    prom = start_prometheus(tmp_path, scrape_config(endpoint.port, password))
    try:
        async with running_agent(
            collector,
            tmp_path / "spool",
            node="gpu07",
            sampler=SteadySampler(),
            attributor=JobAttributor(),
        ):
            await wait_for(lambda: endpoint.scrapes >= 3, timeout_s=40)
            started = time.time()
            await wait_for(lambda: time.time() - started > 4, timeout_s=10)
        await wait_for(lambda: endpoint.scrapes >= 1, timeout_s=5)
        scrapes = endpoint.scrapes
        await wait_for(lambda: endpoint.scrapes >= scrapes + 2, timeout_s=10)  # after the end

        # Jobstats' GPU series with its labels; instance = <node>:<port>, cluster from the
        # scrape config, honor_labels keeps our instance
        series = prom.query("nvidia_gpu_duty_cycle")
        assert {r["metric"]["instance"] for r in series} == {"gpu07:9445"}
        by_minor = {r["metric"]["minor_number"]: r["metric"] for r in series}
        assert by_minor["0"]["jobid"] == "4242" and by_minor["1"]["jobid"] == "4243"
        assert by_minor["0"]["uuid"] == "GPU-00000000-feed"
        assert by_minor["0"]["name"] == "NVIDIA A100-SXM4-80GB"
        assert by_minor["0"]["cluster"] == "C"

        # the values behind the scrape are the newest stored window of each GPU
        newest = {}
        for i in (0, 1):
            windows, _ = collector.store.history(uuid=f"GPU-0000000{i}-feed", resolution=0)
            newest[windows[-1].gpu.uuid] = windows[-1].gpu
        assert values(prom, "nvidia_gpu_duty_cycle") == {u: g.util_mean for u, g in newest.items()}
        assert values(prom, "nvidia_gpu_memory_used_bytes") == {
            u: float(g.mem_used_max_bytes or 0) for u, g in newest.items()
        }
        assert values(prom, "nvidia_gpu_memory_total_bytes") == {u: float(80 << 30) for u in newest}
        assert values(prom, "nvidia_gpu_power_usage_milliwatts") == {
            "GPU-00000000-feed": 250500.0,
            "GPU-00000001-feed": 60000.0,
        }
        assert values(prom, "nvidia_gpu_temperature_celsius") == {
            "GPU-00000000-feed": 61.0,
            "GPU-00000001-feed": 62.0,
        }

        # the exact query jobstats runs for a job's GPU utilisation
        span = round(time.time() - started) + 5
        mean = prom.query(
            f"avg_over_time(nvidia_gpu_duty_cycle{{cluster='C',jobid='4242'}}[{span}s:])"
        )
        assert len(mean) == 1 and float(mean[0]["value"][1]) == pytest.approx(73.0)
        assert mean[0]["metric"]["instance"].split(":")[0] == "gpu07"
        assert mean[0]["metric"]["minor_number"] == "0"
        peak = prom.query(
            f"max_over_time(nvidia_gpu_memory_used_bytes{{cluster='C',jobid='4242'}}[{span}s:])"
        )
        assert float(peak[0]["value"][1]) == float(10 << 30)

        # gpuwarden's own: allocated / active / idle, idle GPU-seconds by user, ingest counts
        assert values(prom, "gpuwarden_gpus_allocated") == {"": 2.0}
        assert values(prom, "gpuwarden_gpus_active") == {"": 1.0}
        assert values(prom, "gpuwarden_gpus_idle") == {"": 1.0}
        idle = {
            r["metric"]["user"]: float(r["value"][1])
            for r in prom.query("gpuwarden_idle_gpu_seconds_total")
        }
        assert set(idle) == {"bob"} and idle["bob"] > 0
        stored = collector.store.count_reports()
        assert values(prom, "gpuwarden_reports_stored_total") == {"": float(stored)}
        assert values(prom, 'gpuwarden_node_slurm_available{node="gpu07"}') == {"": 1.0}
    finally:
        prom.stop()
        endpoint.stop()


def test_the_endpoint_refuses_a_wrong_password_and_serves_over_tls(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("metrics", server=True)
    password = tmp_path / "pw"
    password.write_text("right")
    endpoint = ExporterEndpoint(
        "metrics",
        PrometheusExporter(),
        EndpointSettings(
            listen="127.0.0.1:0",
            tls_cert=str(server.cert),
            tls_key=str(server.key),
            basic_auth_user="prom",
            basic_auth_password_file=str(password),
        ),
    )
    endpoint.start(lambda: LiveView(now=time.time(), state=ClusterState(), windows_stored=7))
    try:
        ctx = ssl.create_default_context(cafile=str(ca.ca))
        url = f"https://127.0.0.1:{endpoint.port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, context=ctx, timeout=5)
        assert denied.value.code == 401
        req = urllib.request.Request(url, headers={"Authorization": "Basic cHJvbTp3cm9uZw=="})
        with pytest.raises(urllib.error.HTTPError) as wrong:
            urllib.request.urlopen(req, context=ctx, timeout=5)
        assert wrong.value.code == 401
        req = urllib.request.Request(url, headers={"Authorization": "Basic cHJvbTpyaWdodA=="})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            body = resp.read().decode()
        assert "gpuwarden_windows_in_store 7.0" in body
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP
            urllib.request.urlopen(url.replace("https", "http"), timeout=5)
    finally:
        endpoint.stop()


def test_prometheus_scrapes_over_tls(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("metrics", server=True)
    endpoint = ExporterEndpoint(
        "metrics",
        PrometheusExporter(),
        EndpointSettings(listen="127.0.0.1:0", tls_cert=str(server.cert), tls_key=str(server.key)),
    )
    endpoint.start(lambda: LiveView(now=time.time(), state=ClusterState(), windows_stored=3))
    prom = start_prometheus(tmp_path, scrape_config(endpoint.port, tls_ca=ca.ca))
    try:
        wait_for_sync(lambda: prom.query("gpuwarden_windows_in_store{cluster='C'}"), 40)
        assert values(prom, "gpuwarden_windows_in_store") == {"": 3.0}
    finally:
        prom.stop()
        endpoint.stop()
