"""GPM profiling fields and GPU identity, read by NvmlSampler from the fake libnvidia-ml.so.1,
reach the collector's history over real gRPC: per card, per MIG instance, and absent (not 0)
on a card without GPM."""

from __future__ import annotations

from pathlib import Path

import pynvml

from gpuwarden.collector.server import Collector
from gpuwarden.query import QueryClient
from tests.fakenvml import FakeNvmlState, default_gpu_uuid
from tests.helpers import running_agent, wait_for

GPU0, GPU1, GPU2, GPU3 = (default_gpu_uuid(i) for i in range(4))
SM = pynvml.NVML_GPM_METRIC_SM_UTIL
TENSOR = pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL
PCIE_RX = pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC


async def test_profiling_fields_and_identity_are_stored_and_queryable(
    collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    for uuid, minor in ((GPU0, 3), (GPU1, 2), (GPU2, 1), (GPU3, 0)):
        fake_nvml.set(uuid, minor_number=minor)
    fake_nvml.set(GPU0, gpm_supported=True, gpm_metrics={SM: 42.5, TENSOR: 0.0, PCIE_RX: 10.0})
    fake_nvml.set(GPU1, gpm_supported=True)
    busy, idle = fake_nvml.enable_mig(GPU1, instances=2)
    fake_nvml.set(busy, gpm_metrics={SM: 88.0, TENSOR: 61.0})
    fake_nvml.set(idle, gpm_metrics={SM: 0.0, TENSOR: 0.0})
    # GPU2 and GPU3: no GPM (the default, as on an A100)
    async with (
        running_agent(collector, tmp_path / "spool", node="gpu01"),
        QueryClient(f"127.0.0.1:{collector.port}") as client,
    ):
        await wait_for(lambda: collector.store.count_windows() >= 3 * 5)
        history = await client.history(node="gpu01")
    windows = {w.gpu.uuid: w.gpu for w in history.windows if w.gpu.samples >= 2}
    assert set(windows) == {GPU0, busy, idle, GPU2, GPU3}

    gpu0 = windows[GPU0]
    assert dict(gpu0.extra_mean) == {
        "sm_active_pct": 42.5,
        "tensor_active_pct": 0.0,
        "pcie_rx_bytes_per_s": 10.0 * 1024 * 1024,
    }
    assert gpu0.extra_max["sm_active_pct"] == 42.5
    assert dict(windows[busy].extra_mean) == {"sm_active_pct": 88.0, "tensor_active_pct": 61.0}
    assert dict(windows[idle].extra_mean) == {"sm_active_pct": 0.0, "tensor_active_pct": 0.0}
    for uuid in (GPU2, GPU3):  # no GPM: no profiling field at all, never 0
        assert dict(windows[uuid].extra_mean) == {} and dict(windows[uuid].extra_max) == {}
        assert windows[uuid].util_max == 0.0  # and its NVML values arrive as before

    identity = {
        u: (w.index, w.minor_number, w.gpu_instance_id, w.parent_uuid) for u, w in windows.items()
    }
    assert identity == {
        GPU0: (0, 3, None, ""),
        busy: (1, 2, 1, GPU1),
        idle: (1, 2, 2, GPU1),
        GPU2: (2, 1, None, ""),
        GPU3: (3, 0, None, ""),
    }
