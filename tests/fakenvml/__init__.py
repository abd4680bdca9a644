"""A fake ``libnvidia-ml.so.1`` so pynvml's real ctypes code runs on machines without a GPU.

Two ways to use it:

* **In the test process**: build it, then preload it with ``preload(lib_path)`` (a plain
  ``ctypes.CDLL(absolute_path)``) BEFORE the first ``nvmlInit``. pynvml later asks for
  ``CDLL("libnvidia-ml.so.1")`` and the dynamic loader hands back the already loaded library
  because its soname matches. Setting ``LD_LIBRARY_PATH`` after the process started does not
  work. The fixture ``fake_nvml_lib`` (``tests.fakenvml.fixtures``) does both.
* **In a subprocess** (e.g. an agent started by a test): pass ``env=env_for(lib_dir, state_path)``
  so ``LD_LIBRARY_PATH`` and ``FAKE_NVML_STATE`` are set when it starts.

The library re-reads the state file on every NVML call, so a test changes the GPUs between
two samples with ``FakeNvmlState`` (``state.set(uuid, util_gpu=0)`` and friends write at once;
after editing ``state.gpus`` by hand call ``state.write()``). The file format is documented at
the top of ``fake_nvml.c``.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LIB_NAME = "libnvidia-ml.so.1"
SOURCE = Path(__file__).with_name("fake_nvml.c")
STATE_ENV = "FAKE_NVML_STATE"
GIB = 1024**3

# Error codes the fake returns, as NVML defines them.
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_GPU_IS_LOST = 15


def build_fake_nvml(dest_dir: Path) -> Path:
    """Compile ``fake_nvml.c`` into ``dest_dir/libnvidia-ml.so.1``; return its absolute path.

    The library is rebuilt only when the C source is newer than an existing build. The build
    goes to a temporary name first and is renamed, so a concurrent reader never sees half a file.
    """
    dest_dir = Path(dest_dir).resolve()
    dest_dir.mkdir(parents=True, exist_ok=True)
    lib = dest_dir / LIB_NAME
    if lib.exists() and lib.stat().st_mtime >= SOURCE.stat().st_mtime:
        return lib
    fd, tmp = tempfile.mkstemp(prefix=".fake-nvml-", suffix=".so", dir=dest_dir)
    os.close(fd)
    cmd = ["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Wl,-soname," + LIB_NAME, "-o", tmp]
    try:
        subprocess.run([*cmd, str(SOURCE), "-lpthread"], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise RuntimeError(f"building the fake NVML library failed:\n{exc.stderr}") from exc
    os.replace(tmp, lib)
    return lib


def preload(lib_path: Path) -> ctypes.CDLL:
    """Load the fake library into this process so pynvml's ``CDLL("libnvidia-ml.so.1")`` finds it.

    Must run before the process's first ``nvmlInit``.
    """
    return ctypes.CDLL(str(Path(lib_path).resolve()))


def call_count(lib: ctypes.CDLL, function: str) -> int:
    """How many times the fake's NVML ``function`` was called since load or ``reset_counts``."""
    counter = lib.fake_nvml_call_count
    counter.restype = ctypes.c_ulonglong
    counter.argtypes = [ctypes.c_char_p]
    return int(counter(function.encode()))


def reset_counts(lib: ctypes.CDLL) -> None:
    lib.fake_nvml_reset_counts()


def gpm_samples_live(lib: ctypes.CDLL) -> int:
    """How many GPM samples are allocated and not yet freed in the fake."""
    live = lib.fake_nvml_gpm_samples_live
    live.restype = ctypes.c_long
    return int(live())


def env_for(
    lib_dir: Path, state_path: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """An environment for a subprocess that should load the fake NVML with this state file.

    ``base`` defaults to ``os.environ``; ``lib_dir`` goes first on ``LD_LIBRARY_PATH``.
    """
    env = dict(os.environ if base is None else base)
    lib_dir = Path(lib_dir).resolve()
    old = env.get("LD_LIBRARY_PATH", "")
    env["LD_LIBRARY_PATH"] = f"{lib_dir}:{old}" if old else str(lib_dir)
    env[STATE_ENV] = str(Path(state_path).resolve())
    return env


Process = tuple[int, int | None]  # (pid, used bytes or None = NVML says "not available")


@dataclass(slots=True)
class FakeMig:
    """One MIG instance of a FakeGpu; utilisation, power and temperature default to unsupported."""

    uuid: str
    name: str = "NVIDIA A100-SXM4-80GB MIG 3g.40gb"
    mem_total_bytes: int | None = 40 * GIB
    mem_used_bytes: int | None = 0
    util_gpu: int | None = None
    util_mem: int | None = None
    power_w: float | None = None
    temperature_c: int | None = None
    processes: list[Process] = field(default_factory=list)
    lost: bool = False
    error_code: int | None = None  # every call on the device returns this NVML error
    gpu_instance_id: int | None = None  # None: position among the GPU's instances + 1
    gpm_metrics: dict[int, float] = field(default_factory=dict)  # NVML_GPM_METRIC_* -> value


@dataclass(slots=True)
class FakeGpu:
    """One physical GPU as the fake NVML reports it. ``None`` = NVML says NOT_SUPPORTED."""

    uuid: str
    index: int
    name: str = "NVIDIA A100-SXM4-80GB"
    util_gpu: int | None = 0
    util_mem: int | None = 0
    mem_total_bytes: int | None = 80 * GIB
    mem_used_bytes: int | None = 0
    mem_reserved_bytes: int = 0
    power_w: float | None = 60.0
    temperature_c: int | None = 30
    processes: list[Process] = field(default_factory=list)
    processes_supported: bool = True
    lost: bool = False
    error_code: int | None = None  # every call on the device returns this NVML error
    mig_mode: bool | None = None  # None: GPU not MIG-capable (NOT_SUPPORTED)
    mig: list[FakeMig] = field(default_factory=list)
    minor_number: int | None = None  # /dev/nvidiaN; None: equal to ``index``
    # GPM: True on Hopper and later; False (the default) on older cards; None: the driver
    # answers NOT_SUPPORTED to the support query itself.
    gpm_supported: bool | None = False
    gpm_metrics: dict[int, float] = field(default_factory=dict)  # NVML_GPM_METRIC_* -> value


def default_gpu_uuid(index: int) -> str:
    return f"GPU-00000000-0000-4000-8000-{index:012d}"


def default_mig_uuid(gpu_index: int, mig_index: int) -> str:
    return f"MIG-00000000-0000-4000-9000-{gpu_index:06d}{mig_index:06d}"


def _na(value: float | None) -> str:
    return "NA" if value is None else str(round(value))


class FakeNvmlState:
    """The GPUs the fake NVML reports, written to ``path`` (atomically) by ``write()``."""

    def __init__(
        self,
        path: Path,
        gpus: Iterable[FakeGpu] = (),
        *,
        driver_version: str = "550.54.15",
        init_error: int | None = None,
        memory_v2: bool = True,
        lib_dir: Path | None = None,
    ) -> None:
        self.path = Path(path).resolve()
        self.gpus: list[FakeGpu] = list(gpus)
        self.driver_version = driver_version
        self.init_error = init_error  # e.g. NVML_ERROR_DRIVER_NOT_LOADED: nvmlInit fails
        self.memory_v2 = memory_v2  # False: nvmlDeviceGetMemoryInfo_v2 -> FUNCTION_NOT_FOUND
        self.lib_dir = lib_dir  # where the fake library lives, for env()

    @classmethod
    def with_gpus(cls, path: Path, count: int = 4, **kwargs: Any) -> FakeNvmlState:
        """``count`` idle A100s with UUIDs ``default_gpu_uuid(0..count-1)``."""
        gpus = [FakeGpu(uuid=default_gpu_uuid(i), index=i) for i in range(count)]
        return cls(path, gpus, **kwargs)

    # -- lookups ---------------------------------------------------------------------------
    def gpu(self, uuid: str) -> FakeGpu:
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise KeyError(f"no fake GPU with UUID {uuid!r}")

    def _device(self, uuid: str) -> FakeGpu | FakeMig:
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
            for mig in gpu.mig:
                if mig.uuid == uuid:
                    return mig
        raise KeyError(f"no fake GPU or MIG instance with UUID {uuid!r}")

    # -- changes (each writes the file at once) ---------------------------------------------
    def set(self, uuid: str, **fields: Any) -> FakeNvmlState:
        """Change fields of a GPU or MIG instance, e.g. ``set(uuid, util_gpu=0, power_w=None)``."""
        device = self._device(uuid)
        for name, value in fields.items():
            if not hasattr(device, name):
                raise AttributeError(f"{type(device).__name__} has no field {name!r}")
            setattr(device, name, value)
        return self.write()

    def add_process(self, uuid: str, pid: int, used_bytes: int | None) -> FakeNvmlState:
        self._device(uuid).processes.append((pid, used_bytes))
        return self.write()

    def remove_process(self, uuid: str, pid: int) -> FakeNvmlState:
        device = self._device(uuid)
        device.processes = [p for p in device.processes if p[0] != pid]
        return self.write()

    def lose(self, uuid: str) -> FakeNvmlState:
        """Every NVML call on this device (and its MIG instances) now returns GPU_IS_LOST."""
        return self.set(uuid, lost=True)

    def enable_mig(self, uuid: str, instances: int = 2) -> list[str]:
        """Turn MIG mode on for a GPU with ``instances`` 3g.40gb instances; return their UUIDs."""
        gpu = self.gpu(uuid)
        gpu.mig_mode = True
        gpu.mig = [FakeMig(uuid=default_mig_uuid(gpu.index, k)) for k in range(instances)]
        self.write()
        return [m.uuid for m in gpu.mig]

    # -- output ------------------------------------------------------------------------------
    def render(self) -> str:
        lines = ["# fake NVML state (format: tests/fakenvml/fake_nvml.c)"]
        lines.append(f"driver {self.driver_version}")
        if self.init_error is not None:
            lines.append(f"init_error {self.init_error}")
        if not self.memory_v2:
            lines.append("memory_v2 off")
        for gpu in self.gpus:
            minor = gpu.index if gpu.minor_number is None else gpu.minor_number
            lines += [f"gpu {gpu.uuid}", f"index {gpu.index}", f"minor {minor}"]
            lines += _device_lines(gpu)
            if gpu.mig_mode is not None:
                lines.append(f"mig_mode {int(gpu.mig_mode)}")
            gpm = "NA" if gpu.gpm_supported is None else str(int(gpu.gpm_supported))
            lines.append(f"gpm {gpm}")
            for pos, mig in enumerate(gpu.mig):
                gi = pos + 1 if mig.gpu_instance_id is None else mig.gpu_instance_id
                lines += [f"mig {mig.uuid}", f"gi {gi}"]
                lines += _device_lines(mig)
        return "\n".join(lines) + "\n"

    def write(self) -> FakeNvmlState:
        """Write the state atomically (temporary file + ``os.replace``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fake-nvml-state-", dir=self.path.parent)
        with os.fdopen(fd, "w") as out:
            out.write(self.render())
        os.replace(tmp, self.path)
        return self

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``env_for(self.lib_dir, self.path)``; needs ``lib_dir`` (the fixtures set it)."""
        if self.lib_dir is None:
            raise ValueError("FakeNvmlState.lib_dir is not set: pass lib_dir= or use env_for()")
        return env_for(self.lib_dir, self.path, base)


def _device_lines(dev: FakeGpu | FakeMig) -> list[str]:
    lines = [f"name {dev.name}"]
    if dev.util_gpu is None or dev.util_mem is None:
        lines.append("util NA")
    else:
        lines.append(f"util {dev.util_gpu} {dev.util_mem}")
    if dev.mem_total_bytes is None or dev.mem_used_bytes is None:
        lines.append("mem NA")
    else:
        reserved = dev.mem_reserved_bytes if isinstance(dev, FakeGpu) else 0
        lines.append(f"mem {dev.mem_total_bytes} {dev.mem_used_bytes} {reserved}")
    lines.append(f"power_mw {_na(None if dev.power_w is None else dev.power_w * 1000)}")
    lines.append(f"temp {_na(dev.temperature_c)}")
    if isinstance(dev, FakeGpu) and not dev.processes_supported:
        lines.append("procs NA")
    for pid, used in dev.processes:
        lines.append(f"proc {pid} {_na(used)}")
    for metric, value in dev.gpm_metrics.items():
        lines.append(f"gpm_metric {metric} {value!r}")
    if dev.error_code is not None:
        lines.append(f"error {dev.error_code}")
    if dev.lost:
        lines.append("lost")
    return lines
