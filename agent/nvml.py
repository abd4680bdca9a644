"""The one module that talks to NVML (through ``nvidia-ml-py``'s ``pynvml``).

``NvmlSampler`` owns the NVML session: ``open()`` runs ``nvmlInit`` once and reads every GPU's
identity (UUID, name, index, MIG layout) once; ``sample(now)`` then makes at most one NVML call
per value per device. ``NotSupported`` (and a function this driver lacks) becomes ``None``,
logged once per function. A device whose calls fail (GPU lost, or any other NVML error) yields a
sample with ``errors`` and ``None`` values while the other devices read as usual. nvidia-smi is
never spawned.

Identity: every sample carries the GPU's minor number (``/dev/nvidiaN``), which Slurm's GRES
indices follow on most sites while NVML's index follows the PCI bus order.

MIG: a GPU in MIG mode with instances is reported as its instances, each its own sample with
``uuid`` = the MIG UUID, ``parent_uuid`` = the GPU's UUID, ``index`` and ``minor_number`` =
the GPU's, its ``gpu_instance_id`` and the minor of its ``/dev/nvidia-caps`` access file (from
``PROC_ROOT/driver/nvidia-caps/mig-minors``). The layout is read at ``open()``; a MIG
reconfiguration needs a new sampler.

Profiling: on GPUs with GPM (Hopper and later) each sample's ``extra`` has the activity since
the previous sample, per GPU and per MIG instance (``agent/gpm.py`` lists the fields).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pynvml

from gpuwarden.agent.gpm import GpmReader, GpmSource
from gpuwarden.agent.nvidia_caps import read_mig_minors
from gpuwarden.agent.sampler import SamplerError
from gpuwarden.common.types import GpuSample, ProcessInfo

log = logging.getLogger(__name__)

_LIBRARY = "libnvidia-ml.so.1"
_T = TypeVar("_T")

# Resolved once: the versioned names differ across nvidia-ml-py releases.
_MEMORY_V2: int | None = getattr(pynvml, "nvmlMemory_v2", None)
_get_processes: Callable[[Any], list[Any]] = getattr(
    pynvml,
    "nvmlDeviceGetComputeRunningProcesses_v3",
    pynvml.nvmlDeviceGetComputeRunningProcesses,
)
# Errors that mean "this value cannot be read here", not "this device is broken".
_MISSING_ERRORS: tuple[type[Exception], ...] = (
    pynvml.NVMLError_NotSupported,
    pynvml.NVMLError_FunctionNotFound,
)


@dataclass(frozen=True, slots=True)
class NvmlDevice:
    """Identity of one GPU or MIG instance, read once at ``open()``."""

    uuid: str
    index: int
    name: str
    parent_uuid: str = ""  # set for a MIG instance
    minor_number: int | None = None  # /dev/nvidiaN (a MIG instance: its GPU's)
    gpu_instance_id: int | None = None  # MIG only
    mig_caps_minor: int | None = None  # MIG only: /dev/nvidia-caps/nvidia-capN

    @property
    def is_mig(self) -> bool:
        return bool(self.parent_uuid)


@dataclass(frozen=True, slots=True)
class _Entry:
    device: NvmlDevice | None  # None: identity could not be read at open(); retried each tick
    handle: Any
    nvml_index: int
    error: str = ""  # why the identity could not be read, e.g. "gpu_lost"
    gpm: GpmSource | None = None  # profiling counters, where the GPU has GPM


def nvml_error_tag(exc: Exception) -> str:
    """``"gpu_lost"`` for a lost GPU, else ``"nvml_error:<Name>"`` (e.g. ``nvml_error:Unknown``)."""
    if isinstance(exc, pynvml.NVMLError_GpuIsLost):
        return "gpu_lost"
    name = type(exc).__name__.removeprefix("NVMLError_")
    if name == "NVMLError":
        name = f"code{getattr(exc, 'value', '?')}"
    return f"nvml_error:{name}"


class NvmlSampler:
    """A ``Sampler`` reading every GPU and MIG instance of this node through NVML.

    ``library_path``: a specific ``libnvidia-ml.so.1`` to load (it is preloaded with
    ``ctypes.CDLL`` before ``nvmlInit``); default: the loader's search path.
    ``proc_root``: where ``/proc`` is mounted; process names come from ``PROC_ROOT/PID/comm``.
    """

    def __init__(self, library_path: str | None = None, *, proc_root: Path = Path("/proc")) -> None:
        self._library_path = library_path
        self._proc_root = proc_root
        self._open = False
        self._entries: list[_Entry] = []
        self._use_memory_v2 = _MEMORY_V2 is not None
        self._logged: set[str] = set()
        self._gpm = GpmReader()
        self._caps: dict[tuple[int, int], int] | None = None  # read when a MIG GPU is found
        self.driver_version = ""

    # -- session -----------------------------------------------------------------------------
    def open(self) -> None:
        if self._open:
            return
        if self._library_path is not None:
            self._preload(Path(self._library_path))
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound as exc:
            raise SamplerError(
                f"NVML library {_LIBRARY} not found: is the NVIDIA driver installed and the "
                "library on the loader path (or set the sampler's library path)?"
            ) from exc
        except pynvml.NVMLError_DriverNotLoaded as exc:
            raise SamplerError("nvmlInit failed: the NVIDIA kernel driver is not loaded") from exc
        except pynvml.NVMLError as exc:
            raise SamplerError(f"nvmlInit failed: {exc} ({nvml_error_tag(exc)})") from exc
        self._open = True
        try:
            self.driver_version = self._call_or_none(pynvml.nvmlSystemGetDriverVersion) or ""
            count = int(pynvml.nvmlDeviceGetCount())
        except pynvml.NVMLError as exc:
            self.close()
            raise SamplerError(f"NVML cannot count the GPUs: {exc}") from exc
        self._entries = []
        for i in range(count):
            self._entries.extend(self._enumerate(i))
        log.info(
            "NVML open: driver %s, %d GPU(s), %d device(s) sampled",
            self.driver_version or "?",
            count,
            len(self._entries),
        )

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._entries = []
        self._gpm.close()
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            log.warning("nvmlShutdown failed: %s", exc)

    @property
    def devices(self) -> tuple[NvmlDevice, ...]:
        """The identities read at ``open()`` (devices unreadable then are left out)."""
        return tuple(e.device for e in self._entries if e.device is not None)

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, now: float) -> list[GpuSample]:
        """One reading of every device; ``now`` is not needed by NVML reads."""
        del now
        if not self._open:
            raise SamplerError("NvmlSampler.sample() called before open() (or after close())")
        samples: list[GpuSample] = []
        for pos, entry in enumerate(self._entries):
            if entry.device is None:
                entry = self._entries[pos] = self._retry_identity(entry)
            if entry.device is None:
                samples.append(self._unknown_sample(entry))
            else:
                samples.append(self._read(entry.device, entry.handle, entry.gpm))
        return samples

    def _read(self, dev: NvmlDevice, handle: Any, gpm: GpmSource | None) -> GpuSample:
        try:
            util = self._call(pynvml.nvmlDeviceGetUtilizationRates, handle)
            mem = self._memory(handle)
            power_mw = self._call(pynvml.nvmlDeviceGetPowerUsage, handle)
            temp = self._call(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU)
            procs = self._call(_get_processes, handle)
        except pynvml.NVMLError as exc:
            return GpuSample(
                uuid=dev.uuid,
                index=dev.index,
                name=dev.name,
                parent_uuid=dev.parent_uuid,
                errors=(nvml_error_tag(exc),),
                minor_number=dev.minor_number,
                gpu_instance_id=dev.gpu_instance_id,
                mig_caps_minor=dev.mig_caps_minor,
            )
        return GpuSample(
            uuid=dev.uuid,
            index=dev.index,
            name=dev.name,
            parent_uuid=dev.parent_uuid,
            minor_number=dev.minor_number,
            gpu_instance_id=dev.gpu_instance_id,
            mig_caps_minor=dev.mig_caps_minor,
            util_gpu_pct=None if util is None else float(util.gpu),
            util_mem_pct=None if util is None else float(util.memory),
            mem_used_bytes=None if mem is None else int(mem.used),
            mem_total_bytes=None if mem is None else int(mem.total),
            power_w=None if power_mw is None else int(power_mw) / 1000.0,
            temperature_c=None if temp is None else float(temp),
            processes=() if procs is None else self._processes(procs),
            extra={} if gpm is None else self._gpm.read(gpm),
        )

    def _memory(self, handle: Any) -> Any:
        """v2 struct (``used`` excludes driver-reserved memory) when the driver has it, else v1."""
        if self._use_memory_v2:
            try:
                return pynvml.nvmlDeviceGetMemoryInfo(handle, version=_MEMORY_V2)
            except pynvml.NVMLError_NotSupported as exc:
                self._log_missing("nvmlDeviceGetMemoryInfo_v2", exc)
                return None
            except (pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_ArgumentVersionMismatch):
                log.info("nvmlDeviceGetMemoryInfo_v2 unavailable in this driver; using v1")
                self._use_memory_v2 = False
        return self._call(pynvml.nvmlDeviceGetMemoryInfo, handle)

    def _processes(self, procs: list[Any]) -> tuple[ProcessInfo, ...]:
        used: dict[int, int | None] = {}
        for proc in procs:
            pid = int(proc.pid)
            mem = None if proc.usedGpuMemory is None else int(proc.usedGpuMemory)
            if pid in used:  # one process, several contexts: add what is known
                prev = used[pid]
                mem = None if prev is None or mem is None else prev + mem
            used[pid] = mem
        return tuple(
            ProcessInfo(pid=pid, used_mem_bytes=mem, name=self._comm(pid))
            for pid, mem in used.items()
        )

    def _comm(self, pid: int) -> str:
        try:
            return (self._proc_root / str(pid) / "comm").read_text().strip()
        except (OSError, UnicodeDecodeError):
            return ""

    def _call(self, fn: Callable[..., _T], *args: Any) -> _T | None:
        """``fn(*args)``; ``None`` when NVML cannot give this value (logged once per function)."""
        try:
            return fn(*args)
        except _MISSING_ERRORS as exc:
            self._log_missing(getattr(fn, "__name__", repr(fn)), exc)
            return None

    def _log_missing(self, function: str, exc: Exception) -> None:
        if function not in self._logged:
            self._logged.add(function)
            log.info("NVML %s: %s; reporting the value as missing", function, exc)

    def _call_or_none(self, fn: Callable[..., _T], *args: Any) -> _T | None:
        try:
            return self._call(fn, *args)
        except pynvml.NVMLError as exc:
            log.warning("NVML %s failed: %s", getattr(fn, "__name__", fn), exc)
            return None

    # -- identity ----------------------------------------------------------------------------
    def _enumerate(self, i: int) -> list[_Entry]:
        """GPU ``i`` as one entry, or its MIG instances when MIG mode is on."""
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpu = self._identity(handle)
        except pynvml.NVMLError as exc:
            log.warning("GPU %d: cannot read its identity (%s); retrying each sample", i, exc)
            return [_Entry(device=None, handle=None, nvml_index=i, error=nvml_error_tag(exc))]
        gpm = self._gpm.supported(handle, gpu.uuid)  # probed once per GPU
        migs = self._mig_instances(gpu, handle, gpm)
        if migs:
            return migs
        src = self._gpm.source(handle, gpu.uuid) if gpm else None
        return [_Entry(device=gpu, handle=handle, nvml_index=i, gpm=src)]

    def _identity(self, handle: Any, parent: NvmlDevice | None = None) -> NvmlDevice:
        uuid = str(pynvml.nvmlDeviceGetUUID(handle))
        name = str(pynvml.nvmlDeviceGetName(handle))
        if parent is not None:
            gi = self._call(pynvml.nvmlDeviceGetGpuInstanceId, handle)
            return NvmlDevice(
                uuid=uuid,
                index=parent.index,
                name=name,
                parent_uuid=parent.uuid,
                minor_number=parent.minor_number,
                gpu_instance_id=None if gi is None else int(gi),
                mig_caps_minor=self._caps_minor(parent.minor_number, gi),
            )
        minor = self._call(pynvml.nvmlDeviceGetMinorNumber, handle)
        return NvmlDevice(
            uuid=uuid,
            index=int(pynvml.nvmlDeviceGetIndex(handle)),
            name=name,
            minor_number=None if minor is None else int(minor),
        )

    def _caps_minor(self, gpu_minor: int | None, gi: int | None) -> int | None:
        if gpu_minor is None or gi is None:
            return None
        if self._caps is None:
            self._caps = read_mig_minors(self._proc_root)
        return self._caps.get((gpu_minor, int(gi)))

    def _mig_instances(self, gpu: NvmlDevice, handle: Any, gpm: bool) -> list[_Entry]:
        try:
            mode = self._call(pynvml.nvmlDeviceGetMigMode, handle)
            if mode is None or mode[0] != pynvml.NVML_DEVICE_MIG_ENABLE:
                return []
            slots = int(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle))
            entries: list[_Entry] = []
            for slot in range(slots):
                try:
                    mig_handle = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                except pynvml.NVMLError_NotFound:
                    continue  # empty slot
                mig = self._identity(mig_handle, parent=gpu)
                gi = mig.gpu_instance_id
                # GPM samples a GPU instance through its parent GPU's handle.
                src = self._gpm.source(handle, mig.uuid, gi) if gpm and gi is not None else None
                entries.append(_Entry(device=mig, handle=mig_handle, nvml_index=gpu.index, gpm=src))
        except pynvml.NVMLError as exc:
            log.warning("GPU %s: cannot read its MIG layout (%s); sampling the GPU", gpu.uuid, exc)
            return []
        if not entries:
            log.info("GPU %s is in MIG mode without instances; sampling the GPU", gpu.uuid)
        return entries

    def _retry_identity(self, entry: _Entry) -> _Entry:
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(entry.nvml_index)
            device = self._identity(handle)
        except pynvml.NVMLError as exc:
            return _Entry(
                device=None, handle=None, nvml_index=entry.nvml_index, error=nvml_error_tag(exc)
            )
        log.info("GPU %d is readable again: %s", entry.nvml_index, device.uuid)
        gpm = (
            self._gpm.source(handle, device.uuid)
            if self._gpm.supported(handle, device.uuid)
            else None
        )
        return _Entry(device=device, handle=handle, nvml_index=entry.nvml_index, gpm=gpm)

    def _unknown_sample(self, entry: _Entry) -> GpuSample:
        # No UUID could ever be read: name the GPU by its NVML index so it is not invisible.
        return GpuSample(
            uuid=f"nvml-index-{entry.nvml_index}",
            index=entry.nvml_index,
            errors=(entry.error or "gpu_lost",),
        )

    @staticmethod
    def _preload(path: Path) -> None:
        if not path.is_file():
            raise SamplerError(f"NVML library {path} does not exist")
        try:
            ctypes.CDLL(str(path.resolve()))
        except OSError as exc:
            raise SamplerError(f"cannot load NVML library {path}: {exc}") from exc
