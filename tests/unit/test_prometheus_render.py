"""What one scrape of the prometheus exporter shows for a given live view."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gpuwarden.collector.outputs.exporter import LiveView
from gpuwarden.collector.outputs.prometheus import PrometheusExporter, PrometheusOptions
from gpuwarden.collector.state import ClusterState
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport


def samples(view: LiveView, opts: PrometheusOptions | None = None) -> dict[str, list]:
    text = PrometheusExporter(opts).render(view).decode()
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_minor_number_is_the_device_minor_and_missing_values_are_left_out() -> None:
    state = ClusterState()
    job = JobInfo(job_id="9", user="u", account="a")
    state.apply(
        NodeReport(
            "gpu03",
            1,
            95.0,
            100.0,
            (
                GpuWindow("GPU-a", 0, name="H100", minor_number=2, util_mean=40.0, job=job),
                GpuWindow("GPU-b", 1, name="H100", util_mean=None, temperature_c=30.0),
            ),
        )
    )
    got = samples(LiveView(now=101.0, state=state, windows_stored=2))
    ((labels, value),) = got["nvidia_gpu_duty_cycle"]
    assert labels == {
        "instance": "gpu03:9445",
        "minor_number": "2",
        "uuid": "GPU-a",
        "name": "H100",
        "jobid": "9",
    }
    assert value == 40.0
    temps = {lab["minor_number"]: v for lab, v in got["nvidia_gpu_temperature_celsius"]}
    assert temps == {"1": 30.0}  # the index where the minor number is unknown
    assert got["nvidia_gpu_num_devices"] == [({"instance": "gpu03:9445"}, 2.0)]


def test_a_gpu_with_no_recent_window_is_not_exported() -> None:
    state = ClusterState()
    state.apply(NodeReport("gpu03", 1, 95.0, 100.0, (GpuWindow("GPU-a", 0, util_mean=1.0),)))
    opts = PrometheusOptions(stale_after=60.0)
    assert "nvidia_gpu_duty_cycle" in samples(LiveView(160.0, state, 1), opts)
    stale = samples(LiveView(161.0, state, 1), opts)
    assert "nvidia_gpu_duty_cycle" not in stale
    assert stale["gpuwarden_gpus"] == [({}, 0.0)]
