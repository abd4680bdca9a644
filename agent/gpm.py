"""NVML GPU Performance Monitoring (GPM): profiling counters of Hopper and later GPUs.

Part of the NVML layer: only ``NvmlSampler`` (``agent/nvml.py``) uses it, inside the NVML
session it holds. NVML's utilisation is a duty cycle (one tiny kernel at a time reads 100 %);
GPM says how much of the GPU did work: SM activity and occupancy, tensor and FP pipes, DRAM
bandwidth, PCIe and NVLink traffic, per card and per MIG instance.

A GPM metric is a rate over the interval between two samples, so every source (a GPU, or a
GPU instance of a MIG-mode GPU) keeps its previous sample: the first tick has no value, each
later tick gives the activity since the tick before. Support is probed once per GPU; a source
that is not supported, or a metric the card does not have, is left out of ``extra`` (missing,
never 0). Two sample buffers per source are allocated once and reused.

The fields, their units and their DCGM equivalents are listed in ``docs/profiling.md``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import pynvml

log = logging.getLogger(__name__)

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GpmField:
    """One ``extra`` field: its name, the NVML GPM metric it comes from, and the scale."""

    name: str
    metric: str  # NVML_GPM_METRIC_<metric> in pynvml
    scale: float = 1.0


GPM_FIELDS: tuple[GpmField, ...] = (
    GpmField("gr_active_pct", "GRAPHICS_UTIL"),
    GpmField("sm_active_pct", "SM_UTIL"),
    GpmField("sm_occupancy_pct", "SM_OCCUPANCY"),
    GpmField("tensor_active_pct", "ANY_TENSOR_UTIL"),
    GpmField("tensor_hmma_active_pct", "HMMA_TENSOR_UTIL"),
    GpmField("dram_active_pct", "DRAM_BW_UTIL"),
    GpmField("fp16_active_pct", "FP16_UTIL"),
    GpmField("fp32_active_pct", "FP32_UTIL"),
    GpmField("fp64_active_pct", "FP64_UTIL"),
    GpmField("pcie_tx_bytes_per_s", "PCIE_TX_PER_SEC", _MIB),
    GpmField("pcie_rx_bytes_per_s", "PCIE_RX_PER_SEC", _MIB),
    GpmField("nvlink_tx_bytes_per_s", "NVLINK_TOTAL_TX_PER_SEC", _MIB),
    GpmField("nvlink_rx_bytes_per_s", "NVLINK_TOTAL_RX_PER_SEC", _MIB),
)

# This nvidia-ml-py has the GPM API (older releases do not).
_HAVE_GPM = all(
    hasattr(pynvml, name)
    for name in (
        "nvmlGpmQueryDeviceSupport",
        "nvmlGpmSampleAlloc",
        "nvmlGpmSampleFree",
        "nvmlGpmSampleGet",
        "nvmlGpmMigSampleGet",
        "nvmlGpmMetricsGet",
        "c_nvmlGpmMetricsGet_t",
    )
)


class GpmSource:
    """One GPU, or one GPU instance of a MIG-mode GPU (``handle`` is then the parent's)."""

    __slots__ = ("enabled", "gpu_instance_id", "handle", "label", "prev", "prev_ok", "spare")

    def __init__(self, handle: Any, gpu_instance_id: int | None, label: str) -> None:
        self.handle = handle
        self.gpu_instance_id = gpu_instance_id
        self.label = label  # the UUID, for the log
        self.prev: Any = None  # the previous sample (valid when prev_ok)
        self.spare: Any = None  # where the next sample goes
        self.prev_ok = False
        self.enabled = True  # False once the driver said NOT_SUPPORTED for this source


class GpmReader:
    """Reads GPM metrics for the sources it made; ``close()`` frees every sample buffer."""

    def __init__(self, fields: tuple[GpmField, ...] = GPM_FIELDS) -> None:
        self._fields = tuple(f for f in fields if hasattr(pynvml, f"NVML_GPM_METRIC_{f.metric}"))
        self._sources: list[GpmSource] = []
        self._logged: set[str] = set()
        self._request: Any = None
        if _HAVE_GPM:
            self._request = pynvml.c_nvmlGpmMetricsGet_t()
            for i, f in enumerate(self._fields):
                self._request.metrics[i].metricId = getattr(pynvml, f"NVML_GPM_METRIC_{f.metric}")

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self._fields)

    def supported(self, handle: Any, label: str) -> bool:
        """Whether this GPU has GPM (asked once per GPU, at open)."""
        if not _HAVE_GPM:
            self._log_once("api", "this nvidia-ml-py has no GPM API; profiling fields are missing")
            return False
        try:
            answer = pynvml.nvmlGpmQueryDeviceSupport(handle)
        except pynvml.NVMLError as exc:
            self._log_once(f"probe:{type(exc).__name__}", f"GPM support query failed ({exc})")
            return False
        ok = bool(answer.isSupportedDevice)
        log.info("GPU %s: GPM %s", label, "supported" if ok else "not supported")
        return ok

    def source(self, handle: Any, label: str, gpu_instance_id: int | None = None) -> GpmSource:
        src = GpmSource(handle, gpu_instance_id, label)
        self._sources.append(src)
        return src

    def read(self, src: GpmSource) -> dict[str, float]:
        """The activity since the previous call for this source; ``{}`` on the first call and
        whenever it cannot be read."""
        if not src.enabled:
            return {}
        try:
            if src.spare is None:
                src.spare = pynvml.nvmlGpmSampleAlloc()
            if src.gpu_instance_id is None:
                pynvml.nvmlGpmSampleGet(src.handle, src.spare)
            else:
                pynvml.nvmlGpmMigSampleGet(src.handle, src.gpu_instance_id, src.spare)
        except pynvml.NVMLError_NotSupported:
            src.enabled = False
            log.info(
                "GPM sampling of %s is not supported; its profiling fields are missing", src.label
            )
            return {}
        except pynvml.NVMLError as exc:
            src.prev_ok = False  # start the pair again once it reads
            self._log_once(f"sample:{src.label}", f"GPM sample of {src.label} failed ({exc})")
            return {}
        out = self._metrics(src.prev, src.spare, src.label) if src.prev_ok else {}
        src.prev, src.spare = src.spare, src.prev
        src.prev_ok = True
        return out

    def _metrics(self, first: Any, second: Any, label: str) -> dict[str, float]:
        req = self._request
        req.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        req.numMetrics = len(self._fields)
        req.sample1 = first
        req.sample2 = second
        try:
            pynvml.nvmlGpmMetricsGet(req)
        except pynvml.NVMLError as exc:
            self._log_once(f"metrics:{label}", f"GPM metrics of {label} failed ({exc})")
            return {}
        out: dict[str, float] = {}
        for i, f in enumerate(self._fields):
            metric = req.metrics[i]
            value = float(metric.value)
            if metric.nvmlReturn == pynvml.NVML_SUCCESS and math.isfinite(value):
                out[f.name] = value * f.scale
        return out

    def close(self) -> None:
        for src in self._sources:
            for sample in (src.prev, src.spare):
                if sample is not None:
                    try:
                        pynvml.nvmlGpmSampleFree(sample)
                    except pynvml.NVMLError as exc:
                        log.warning("nvmlGpmSampleFree failed: %s", exc)
            src.prev = src.spare = None
            src.prev_ok = False
        self._sources = []

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.info("%s", message)
