"""GPM profiling fields through NvmlSampler, against the fake libnvidia-ml.so.1: nvidia-ml-py's
real GPM code (support query, sample alloc/get/free, metrics) runs."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pynvml
import pytest

from gpuwarden.agent.nvml import NvmlSampler
from gpuwarden.common.types import GpuSample
from tests.fakenvml import (
    FakeNvmlState,
    call_count,
    default_gpu_uuid,
    gpm_samples_live,
    preload,
    reset_counts,
)

GPU0, GPU1, GPU2, GPU3 = (default_gpu_uuid(i) for i in range(4))
MIB = 1024 * 1024

# What an H100 training step might show: busy SMs, some tensor work, PCIe input traffic.
HOPPER_METRICS = {
    pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL: 97.0,
    pynvml.NVML_GPM_METRIC_SM_UTIL: 42.5,
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: 30.25,
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 12.0,
    pynvml.NVML_GPM_METRIC_HMMA_TENSOR_UTIL: 11.5,
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 55.0,
    pynvml.NVML_GPM_METRIC_FP16_UTIL: 1.0,
    pynvml.NVML_GPM_METRIC_FP32_UTIL: 20.0,
    pynvml.NVML_GPM_METRIC_FP64_UTIL: 0.0,
    pynvml.NVML_GPM_METRIC_PCIE_TX_PER_SEC: 100.0,
    pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC: 2500.0,
}
HOPPER_FIELDS = {
    "gr_active_pct": 97.0,
    "sm_active_pct": 42.5,
    "sm_occupancy_pct": 30.25,
    "tensor_active_pct": 12.0,
    "tensor_hmma_active_pct": 11.5,
    "dram_active_pct": 55.0,
    "fp16_active_pct": 1.0,
    "fp32_active_pct": 20.0,
    "fp64_active_pct": 0.0,  # measured idle pipe: 0, not missing
    "pcie_tx_bytes_per_s": 100.0 * MIB,
    "pcie_rx_bytes_per_s": 2500.0 * MIB,
    # no NVLink on this card: nvlink_* are absent
}


def by_uuid(samples: list[GpuSample]) -> dict[str, GpuSample]:
    return {s.uuid: s for s in samples}


def open_sampler(tmp_path: Path) -> NvmlSampler:
    s = NvmlSampler(proc_root=tmp_path)
    s.open()
    return s


def test_a_card_with_gpm_reports_activity_from_its_second_tick(
    fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    fake_nvml.set(GPU0, gpm_supported=True, gpm_metrics=dict(HOPPER_METRICS))
    s = open_sampler(tmp_path)
    try:
        first = by_uuid(s.sample(1.0))
        second = by_uuid(s.sample(2.0))
    finally:
        s.close()
    assert dict(first[GPU0].extra) == {}  # a rate needs two samples: no value yet, not 0
    assert dict(second[GPU0].extra) == HOPPER_FIELDS
    assert second[GPU0].util_gpu_pct == 0.0  # the NVML values are read as before
    assert second[GPU0].errors == ()


def test_activity_follows_the_card_between_ticks(fake_nvml: FakeNvmlState, tmp_path: Path) -> None:
    sm = pynvml.NVML_GPM_METRIC_SM_UTIL
    tensor = pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL
    fake_nvml.set(GPU3, gpm_supported=True, gpm_metrics={sm: 80.0, tensor: 0.0})
    s = open_sampler(tmp_path)
    try:
        s.sample(1.0)
        busy = by_uuid(s.sample(2.0))[GPU3].extra
        fake_nvml.set(GPU3, gpm_metrics={sm: 3.0, tensor: 65.0})
        changed = by_uuid(s.sample(3.0))[GPU3].extra
    finally:
        s.close()
    assert (busy["sm_active_pct"], busy["tensor_active_pct"]) == (80.0, 0.0)
    assert (changed["sm_active_pct"], changed["tensor_active_pct"]) == (3.0, 65.0)


@pytest.mark.parametrize("support", [False, None], ids=["older-card", "query-not-supported"])
def test_a_card_without_gpm_has_no_profiling_fields_and_nothing_breaks(
    fake_nvml: FakeNvmlState, fake_nvml_lib: Path, tmp_path: Path, support: bool | None
) -> None:
    # Counters configured but the card says "no GPM": they must not be read at all.
    fake_nvml.set(GPU1, gpm_supported=support, gpm_metrics=dict(HOPPER_METRICS), util_gpu=70)
    fake_nvml.set(GPU2, gpm_supported=True, gpm_metrics={pynvml.NVML_GPM_METRIC_SM_UTIL: 9.0})
    lib = preload(fake_nvml_lib)
    s = open_sampler(tmp_path)
    reset_counts(lib)
    try:
        ticks = [by_uuid(s.sample(float(t))) for t in range(3)]
    finally:
        s.close()
    assert [dict(t[GPU1].extra) for t in ticks] == [{}, {}, {}]
    assert [t[GPU1].util_gpu_pct for t in ticks] == [70.0, 70.0, 70.0]
    assert [t[GPU1].errors for t in ticks] == [(), (), ()]
    assert [dict(t[GPU2].extra) for t in ticks] == [
        {},
        {"sm_active_pct": 9.0},
        {"sm_active_pct": 9.0},
    ]
    assert call_count(lib, "nvmlGpmSampleGet") == 3  # GPU2 only, once a tick


def test_support_is_probed_once_per_gpu_and_buffers_are_reused(
    fake_nvml: FakeNvmlState, fake_nvml_lib: Path, tmp_path: Path
) -> None:
    for uuid in (GPU0, GPU1):
        fake_nvml.set(uuid, gpm_supported=True, gpm_metrics=dict(HOPPER_METRICS))
    lib = preload(fake_nvml_lib)
    reset_counts(lib)
    s = open_sampler(tmp_path)
    for t in range(5):
        s.sample(float(t))
    counts = {
        f: call_count(lib, f)
        for f in ("nvmlGpmQueryDeviceSupport", "nvmlGpmSampleAlloc", "nvmlGpmMetricsGet")
    }
    live = gpm_samples_live(lib)
    s.close()
    assert counts == {
        "nvmlGpmQueryDeviceSupport": 4,  # once per GPU, at open
        "nvmlGpmSampleAlloc": 4,  # two buffers per GPM GPU, whatever the number of ticks
        "nvmlGpmMetricsGet": 8,  # 2 GPUs x ticks 2..5
    }
    assert live == 4
    assert gpm_samples_live(lib) == 0  # close() freed them


def test_a_metric_that_is_not_finite_is_missing(fake_nvml: FakeNvmlState, tmp_path: Path) -> None:
    fake_nvml.set(
        GPU0,
        gpm_supported=True,
        gpm_metrics={
            pynvml.NVML_GPM_METRIC_SM_UTIL: math.nan,
            pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 4.0,
        },
    )
    s = open_sampler(tmp_path)
    try:
        s.sample(1.0)
        extra = dict(by_uuid(s.sample(2.0))[GPU0].extra)
    finally:
        s.close()
    assert extra == {"dram_active_pct": 4.0}


def test_mig_instances_get_their_own_activity_through_their_gpu_instance(
    fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    sm = pynvml.NVML_GPM_METRIC_SM_UTIL
    tensor = pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL
    fake_nvml.set(GPU1, gpm_supported=True, gpm_metrics={sm: 50.0})  # the whole card
    busy, idle = fake_nvml.enable_mig(GPU1, instances=2)
    # GPU instance ids as a 2 x 3g.40gb layout after reconfiguration might have them: not 1, 2.
    fake_nvml.set(busy, gpu_instance_id=2, gpm_metrics={sm: 91.0, tensor: 60.0})
    fake_nvml.set(idle, gpu_instance_id=1, gpm_metrics={sm: 0.0, tensor: 0.0})
    s = open_sampler(tmp_path)
    try:
        s.sample(1.0)
        samples = by_uuid(s.sample(2.0))
    finally:
        s.close()
    assert dict(samples[busy].extra) == {"sm_active_pct": 91.0, "tensor_active_pct": 60.0}
    assert dict(samples[idle].extra) == {"sm_active_pct": 0.0, "tensor_active_pct": 0.0}
    assert (samples[busy].gpu_instance_id, samples[idle].gpu_instance_id) == (2, 1)
    assert GPU1 not in samples  # the card is reported as its instances


def test_mig_instances_of_a_card_without_gpm_have_no_profiling_fields(
    fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    migs = fake_nvml.enable_mig(GPU0, instances=2)
    fake_nvml.set(migs[0], gpm_metrics={pynvml.NVML_GPM_METRIC_SM_UTIL: 91.0})
    s = open_sampler(tmp_path)
    try:
        ticks = [by_uuid(s.sample(float(t))) for t in range(2)]
    finally:
        s.close()
    assert [dict(t[m].extra) for t in ticks for m in migs] == [{}, {}, {}, {}]
    assert [t[m].errors for t in ticks for m in migs] == [(), (), (), ()]


def test_a_lost_gpu_does_not_stop_the_others_profiling(
    fake_nvml: FakeNvmlState, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sm = pynvml.NVML_GPM_METRIC_SM_UTIL
    for uuid, value in ((GPU0, 10.0), (GPU2, 20.0)):
        fake_nvml.set(uuid, gpm_supported=True, gpm_metrics={sm: value})
    s = open_sampler(tmp_path)
    try:
        s.sample(1.0)
        fake_nvml.lose(GPU0)
        with caplog.at_level(logging.INFO, logger="gpuwarden.agent"):
            lost = by_uuid(s.sample(2.0))
        fake_nvml.set(GPU0, lost=False, gpm_metrics={sm: 30.0})
        back = by_uuid(s.sample(3.0))
    finally:
        s.close()
    assert lost[GPU0].errors == ("gpu_lost",)
    assert dict(lost[GPU0].extra) == {}
    assert dict(lost[GPU2].extra) == {"sm_active_pct": 20.0}
    assert dict(back[GPU0].extra) == {"sm_active_pct": 30.0}
