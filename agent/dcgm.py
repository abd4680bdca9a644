"""The ``dcgm`` sampler: NVML readings plus DCGM's profiling fields, for cards without GPM.

GPM (``agent/gpm.py``) gives profiling counters on Hopper and later GPUs through NVML alone.
On older data-centre GPUs (V100, A100, ...) the same counters come from DCGM's profiling
fields, read from a running DCGM host engine (``nv-hostengine``). This sampler is the NVML
sampler (every value, process, MIG instance and GPM field as usual) with, for each whole GPU,
the DCGM fields that GPM did not give (``DCGM_FIELDS``; ``docs/profiling.md`` lists them).

DCGM is not a dependency: its Python bindings (``pydcgm``, ``dcgm_structs``, ``dcgm_fields``,
shipped with the ``datacenter-gpu-manager`` package, usually in
``/usr/local/dcgm/bindings/python3``) must be importable, e.g. through ``PYTHONPATH`` in the
agent's unit, and a host engine must answer at ``[agent] dcgm_host``. Without either, the
agent stops at start with a message naming what is missing. A blank field (the card lacks
the counter) is left out, never 0; MIG instances get GPM fields only.
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import replace
from types import ModuleType
from typing import Any

from gpuwarden.agent.nvml import NvmlSampler
from gpuwarden.agent.sampler import SamplerError
from gpuwarden.common.types import GpuSample

log = logging.getLogger(__name__)

# extra name -> (dcgm_fields constant, scale)
DCGM_FIELDS: dict[str, tuple[str, float]] = {
    "gr_active_pct": ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 100.0),
    "sm_active_pct": ("DCGM_FI_PROF_SM_ACTIVE", 100.0),
    "sm_occupancy_pct": ("DCGM_FI_PROF_SM_OCCUPANCY", 100.0),
    "tensor_active_pct": ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 100.0),
    "tensor_hmma_active_pct": ("DCGM_FI_PROF_PIPE_TENSOR_HMMA_ACTIVE", 100.0),
    "dram_active_pct": ("DCGM_FI_PROF_DRAM_ACTIVE", 100.0),
    "fp16_active_pct": ("DCGM_FI_PROF_PIPE_FP16_ACTIVE", 100.0),
    "fp32_active_pct": ("DCGM_FI_PROF_PIPE_FP32_ACTIVE", 100.0),
    "fp64_active_pct": ("DCGM_FI_PROF_PIPE_FP64_ACTIVE", 100.0),
    "pcie_tx_bytes_per_s": ("DCGM_FI_PROF_PCIE_TX_BYTES", 1.0),
    "pcie_rx_bytes_per_s": ("DCGM_FI_PROF_PCIE_RX_BYTES", 1.0),
    "nvlink_tx_bytes_per_s": ("DCGM_FI_PROF_NVLINK_TX_BYTES", 1.0),
    "nvlink_rx_bytes_per_s": ("DCGM_FI_PROF_NVLINK_RX_BYTES", 1.0),
}
BINDINGS = ("pydcgm", "dcgm_structs", "dcgm_fields")
_UPDATE_US = 1_000_000  # the host engine refreshes the fields every second
_KEEP_AGE_S = 30.0
_KEEP_SAMPLES = 0  # no limit beyond the age


def import_bindings() -> dict[str, ModuleType]:
    """DCGM's Python modules, or SamplerError naming those that do not import."""
    found: dict[str, ModuleType] = {}
    missing: list[str] = []
    for name in BINDINGS:
        try:
            found[name] = importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        raise SamplerError(
            "sampler dcgm: DCGM's Python bindings are not importable: "
            + "; ".join(missing)
            + ". Install DCGM (datacenter-gpu-manager) and put its bindings folder "
            "(usually /usr/local/dcgm/bindings/python3) on the agent's PYTHONPATH, "
            "or use sampler = nvml"
        )
    return found


def _text(value: object) -> str:
    """A ctypes char array comes back as bytes."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class DcgmSampler:
    """``Sampler``: an ``NvmlSampler`` whose whole-GPU samples gain DCGM profiling fields."""

    def __init__(self, nvml: NvmlSampler, host: str = "localhost") -> None:
        self._nvml = nvml
        self._host = host
        self._mods: dict[str, ModuleType] = {}
        self._handle: Any = None
        self._group: Any = None
        self._field_group: Any = None
        self._field_ids: dict[int, tuple[str, float]] = {}
        self._uuid_of: dict[int, str] = {}  # DCGM GPU id -> NVML UUID
        self._logged: set[str] = set()

    def open(self) -> None:
        self._mods = import_bindings()  # before NVML: a missing piece stops the start
        self._connect()
        try:
            self._nvml.open()
        except SamplerError:
            self._disconnect()
            raise

    def _connect(self) -> None:
        pydcgm, structs, fields = (self._mods[n] for n in BINDINGS)
        self._field_ids = {
            int(getattr(fields, const)): (name, scale)
            for name, (const, scale) in DCGM_FIELDS.items()
            if hasattr(fields, const)
        }
        try:
            self._handle = pydcgm.DcgmHandle(
                ipAddress=self._host, opMode=structs.DCGM_OPERATION_MODE_AUTO
            )
        except Exception as exc:  # the bindings raise DCGMError subclasses and OSError
            raise SamplerError(
                f"sampler dcgm: no DCGM host engine answers at {self._host!r} ({exc}); "
                "start nv-hostengine (systemctl start nvidia-dcgm) or use sampler = nvml"
            ) from exc
        try:
            system = self._handle.GetSystem()
            gpu_ids = list(system.discovery.GetAllSupportedGpuIds())
            self._uuid_of = {
                int(g): _text(system.discovery.GetGpuAttributes(g).identifiers.uuid)
                for g in gpu_ids
            }
            self._group = pydcgm.DcgmGroup(
                self._handle, groupName="gpuwarden", groupType=structs.DCGM_GROUP_DEFAULT
            )
            self._field_group = pydcgm.DcgmFieldGroup(
                self._handle, name="gpuwarden-prof", fieldIds=list(self._field_ids)
            )
            self._group.samples.WatchFields(
                self._field_group, _UPDATE_US, _KEEP_AGE_S, _KEEP_SAMPLES
            )
        except Exception as exc:
            self._disconnect()
            raise SamplerError(
                f"sampler dcgm: the host engine at {self._host!r} cannot watch the profiling "
                f"fields ({exc}); another profiler may hold the counters, or these GPUs lack "
                "them: use sampler = nvml"
            ) from exc
        log.info("DCGM at %s: %d GPU(s), profiling fields watched", self._host, len(gpu_ids))

    def sample(self, now: float) -> list[GpuSample]:
        samples = self._nvml.sample(now)
        by_uuid = self._latest()
        out: list[GpuSample] = []
        for s in samples:
            prof = by_uuid.get(s.uuid) if not s.parent_uuid else None
            if prof:
                s = replace(s, extra={**prof, **s.extra})  # GPM's own value wins
            out.append(s)
        return out

    def _latest(self) -> dict[str, dict[str, float]]:
        """``{uuid: {extra name: value}}`` of the newest DCGM values; ``{}`` when unreadable."""
        try:
            collection = self._group.samples.GetLatest(self._field_group)
            per_gpu = collection.values
        except Exception as exc:
            self._log_once(type(exc).__name__, f"DCGM read failed ({exc}); fields missing")
            return {}
        out: dict[str, dict[str, float]] = {}
        for gpu_id, series in per_gpu.items():
            uuid = self._uuid_of.get(int(gpu_id))
            if uuid is None:
                continue
            values: dict[str, float] = {}
            for field_id, ts in series.items():
                known = self._field_ids.get(int(field_id))
                if known is None or len(ts) == 0:
                    continue
                latest = ts[-1]
                if getattr(latest, "isBlank", True):
                    continue  # the card lacks the counter: missing, not 0
                value = float(latest.value)
                if math.isfinite(value):
                    values[known[0]] = value * known[1]
            out[uuid] = values
        return out

    def close(self) -> None:
        self._nvml.close()
        self._disconnect()

    def _disconnect(self) -> None:
        for obj, method in ((self._field_group, "Delete"), (self._group, "Delete")):
            if obj is not None:
                try:
                    getattr(obj, method)()
                except Exception as exc:
                    log.warning("DCGM clean-up failed: %s", exc)
        self._field_group = self._group = None
        if self._handle is not None:
            try:
                self._handle.Shutdown()
            except Exception as exc:
                log.warning("DCGM disconnect failed: %s", exc)
        self._handle = None

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s", message)
