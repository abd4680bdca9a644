"""NvmlSampler against the fake libnvidia-ml.so.1: pynvml's real ctypes code runs."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuwarden.agent.nvml import NvmlSampler
from gpuwarden.agent.sampler import SamplerError
from gpuwarden.common.types import GpuSample, ProcessInfo
from tests.fakenvml import (
    GIB,
    NVML_ERROR_DRIVER_NOT_LOADED,
    FakeNvmlState,
    call_count,
    default_gpu_uuid,
    preload,
    reset_counts,
)

pytest_plugins = ["tests.fakenvml.fixtures"]

GPU0, GPU1, GPU2, GPU3 = (default_gpu_uuid(i) for i in range(4))
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    for pid, comm in ((4242, "python"), (4343, "dask-worker")):
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "comm").write_text(comm + "\n")
    return root


@pytest.fixture
def sampler(fake_nvml: FakeNvmlState, proc_root: Path) -> Iterator[NvmlSampler]:
    s = NvmlSampler(proc_root=proc_root)
    s.open()
    yield s
    s.close()


def by_uuid(samples: list[GpuSample]) -> dict[str, GpuSample]:
    return {s.uuid: s for s in samples}


def test_every_value_of_a_busy_gpu_is_read_in_its_units(
    fake_nvml: FakeNvmlState, proc_root: Path
) -> None:
    fake_nvml.set(
        GPU2,
        name="NVIDIA H100 80GB HBM3",
        util_gpu=87,
        util_mem=41,
        mem_total_bytes=80 * GIB,
        mem_used_bytes=30 * GIB,
        power_w=312.5,
        temperature_c=64,
        processes=[(4242, 29 * GIB)],
    )
    s = NvmlSampler(proc_root=proc_root)
    s.open()
    try:
        samples = s.sample(1000.0)
    finally:
        s.close()
    assert [x.uuid for x in samples] == [GPU0, GPU1, GPU2, GPU3]
    assert samples[2] == GpuSample(
        uuid=GPU2,
        index=2,
        name="NVIDIA H100 80GB HBM3",
        util_gpu_pct=87.0,
        util_mem_pct=41.0,
        mem_used_bytes=30 * GIB,
        mem_total_bytes=80 * GIB,
        power_w=312.5,
        temperature_c=64.0,
        processes=(ProcessInfo(pid=4242, used_mem_bytes=29 * GIB, name="python"),),
        minor_number=2,
    )
    assert samples[0].util_gpu_pct == 0.0  # an idle GPU reads 0, not None
    assert samples[0].errors == ()
    assert s.driver_version == "550.54.15"


def test_changes_between_two_samples_are_seen(
    fake_nvml: FakeNvmlState, sampler: NvmlSampler
) -> None:
    fake_nvml.set(GPU1, util_gpu=100, mem_used_bytes=10 * GIB)
    first = by_uuid(sampler.sample(1.0))[GPU1]
    fake_nvml.set(GPU1, util_gpu=0, mem_used_bytes=2 * GIB, temperature_c=41)
    second = by_uuid(sampler.sample(2.0))[GPU1]
    assert (first.util_gpu_pct, first.mem_used_bytes) == (100.0, 10 * GIB)
    assert (second.util_gpu_pct, second.mem_used_bytes, second.temperature_c) == (
        0.0,
        2 * GIB,
        41.0,
    )


def test_not_supported_values_are_none_and_logged_once_per_function(
    fake_nvml: FakeNvmlState, sampler: NvmlSampler, caplog: pytest.LogCaptureFixture
) -> None:
    for uuid in (GPU0, GPU3):
        fake_nvml.set(uuid, power_w=None, temperature_c=None, util_gpu=None)
    fake_nvml.set(GPU3, mem_total_bytes=None, processes_supported=False)
    with caplog.at_level(logging.INFO, logger="gpuwarden.agent.nvml"):
        sampler.sample(1.0)
        samples = by_uuid(sampler.sample(2.0))
    gpu0, gpu3 = samples[GPU0], samples[GPU3]
    assert (gpu0.power_w, gpu0.temperature_c, gpu0.util_gpu_pct, gpu0.util_mem_pct) == (None,) * 4
    assert gpu0.mem_total_bytes == 80 * GIB
    assert (gpu3.mem_total_bytes, gpu3.mem_used_bytes, gpu3.processes) == (None, None, ())
    assert gpu0.errors == gpu3.errors == ()
    assert samples[GPU1].power_w == 60.0
    power_logs = [r for r in caplog.records if "nvmlDeviceGetPowerUsage" in r.getMessage()]
    assert len(power_logs) == 1  # 2 GPUs x 2 ticks, one line


def test_a_process_appears_then_leaves_with_its_name_and_memory(
    fake_nvml: FakeNvmlState, sampler: NvmlSampler
) -> None:
    assert by_uuid(sampler.sample(1.0))[GPU0].processes == ()
    fake_nvml.add_process(GPU0, 4343, 3 * GIB)
    fake_nvml.add_process(GPU0, 777, None)  # memory N/A; no /proc entry
    seen = by_uuid(sampler.sample(2.0))[GPU0].processes
    fake_nvml.remove_process(GPU0, 4343)
    fake_nvml.remove_process(GPU0, 777)
    gone = by_uuid(sampler.sample(3.0))[GPU0].processes
    assert seen == (
        ProcessInfo(pid=4343, used_mem_bytes=3 * GIB, name="dask-worker"),
        ProcessInfo(pid=777, used_mem_bytes=None, name=""),
    )
    assert gone == ()


def test_a_lost_gpu_reports_gpu_lost_while_the_others_still_read(
    fake_nvml: FakeNvmlState, sampler: NvmlSampler
) -> None:
    fake_nvml.set(GPU3, util_gpu=55)
    fake_nvml.lose(GPU1)
    samples = by_uuid(sampler.sample(1.0))
    lost = samples[GPU1]
    assert lost.errors == ("gpu_lost",)
    assert (lost.index, lost.name) == (1, "NVIDIA A100-SXM4-80GB")  # identity was cached
    values = (lost.util_gpu_pct, lost.mem_used_bytes, lost.power_w, lost.temperature_c)
    assert values == (None, None, None, None)
    assert samples[GPU3].util_gpu_pct == 55.0
    assert [samples[u].errors for u in (GPU0, GPU2, GPU3)] == [(), (), ()]


def test_any_other_nvml_error_on_a_gpu_is_named_in_its_errors(
    fake_nvml: FakeNvmlState, sampler: NvmlSampler
) -> None:
    fake_nvml.set(GPU2, error_code=999)
    samples = by_uuid(sampler.sample(1.0))
    assert samples[GPU2].errors == ("nvml_error:Unknown",)
    assert samples[GPU2].util_gpu_pct is None
    assert samples[GPU0].util_gpu_pct == 0.0


def test_a_gpu_lost_at_open_is_reported_by_index_then_by_uuid_when_back(
    fake_nvml: FakeNvmlState, proc_root: Path
) -> None:
    fake_nvml.lose(GPU1)
    s = NvmlSampler(proc_root=proc_root)
    s.open()
    try:
        first = s.sample(1.0)
        fake_nvml.set(GPU1, lost=False, util_gpu=9)
        second = by_uuid(s.sample(2.0))
    finally:
        s.close()
    assert first[1] == GpuSample(uuid="nvml-index-1", index=1, errors=("gpu_lost",))
    assert second[GPU1].minor_number == 1
    assert second[GPU1].util_gpu_pct == 9.0
    assert second[GPU1].errors == ()


def test_mig_instances_are_sampled_each_with_its_parent(
    fake_nvml: FakeNvmlState, proc_root: Path
) -> None:
    mig_a, mig_b = fake_nvml.enable_mig(GPU1, instances=2)
    fake_nvml.set(mig_a, mem_used_bytes=12 * GIB, processes=[(4242, 11 * GIB)])
    s = NvmlSampler(proc_root=proc_root)
    s.open()
    try:
        samples = s.sample(1.0)
    finally:
        s.close()
    assert [x.uuid for x in samples] == [GPU0, mig_a, mig_b, GPU2, GPU3]
    a, b = samples[1], samples[2]
    assert (a.parent_uuid, b.parent_uuid, a.index, b.index) == (GPU1, GPU1, 1, 1)
    assert a.name == "NVIDIA A100-SXM4-80GB MIG 3g.40gb"
    assert (a.mem_used_bytes, a.mem_total_bytes) == (12 * GIB, 40 * GIB)
    assert a.processes == (ProcessInfo(pid=4242, used_mem_bytes=11 * GIB, name="python"),)
    assert b.processes == ()
    assert (a.util_gpu_pct, a.power_w, a.temperature_c) == (None, None, None)  # not per instance
    assert a.errors == b.errors == ()
    assert samples[0].parent_uuid == ""


def test_mig_instances_of_a_lost_gpu_report_gpu_lost(
    fake_nvml: FakeNvmlState, proc_root: Path
) -> None:
    migs = fake_nvml.enable_mig(GPU0)
    s = NvmlSampler(proc_root=proc_root)
    s.open()
    try:
        fake_nvml.lose(GPU0)
        samples = by_uuid(s.sample(1.0))
    finally:
        s.close()
    assert [samples[m].errors for m in migs] == [("gpu_lost",), ("gpu_lost",)]
    assert samples[GPU2].errors == ()


def test_memory_falls_back_to_v1_when_the_driver_lacks_v2(
    fake_nvml: FakeNvmlState, proc_root: Path
) -> None:
    # v1 "used" includes the driver-reserved memory, v2 "used" does not: the value shows the path.
    fake_nvml.set(GPU0, mem_used_bytes=5 * GIB, mem_reserved_bytes=GIB)
    v2 = NvmlSampler(proc_root=proc_root)
    v2.open()
    used_v2 = v2.sample(1.0)[0].mem_used_bytes
    v2.close()
    fake_nvml.memory_v2 = False
    fake_nvml.write()
    v1 = NvmlSampler(proc_root=proc_root)
    v1.open()
    used_v1 = [v1.sample(t)[0].mem_used_bytes for t in (1.0, 2.0)]
    v1.close()
    assert used_v2 == 5 * GIB
    assert used_v1 == [6 * GIB, 6 * GIB]


def test_a_tick_makes_one_call_per_value_and_never_rereads_identity(
    fake_nvml: FakeNvmlState, fake_nvml_lib: Path, sampler: NvmlSampler
) -> None:
    lib = preload(fake_nvml_lib)
    reset_counts(lib)
    sampler.sample(1.0)
    sampler.sample(2.0)
    per_value = [
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetMemoryInfo_v2",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetTemperature",
    ]
    assert {f: call_count(lib, f) for f in per_value} == dict.fromkeys(per_value, 8)
    identity = ["nvmlDeviceGetUUID", "nvmlDeviceGetName", "nvmlDeviceGetIndex", "nvmlInit"]
    assert [call_count(lib, f) for f in identity] == [0, 0, 0, 0]
    assert call_count(lib, "nvmlDeviceGetMemoryInfo") == 0  # v2 works: v1 never called


def test_close_shuts_nvml_down_once_and_sampling_after_close_is_an_error(
    fake_nvml: FakeNvmlState, fake_nvml_lib: Path
) -> None:
    lib = preload(fake_nvml_lib)
    s = NvmlSampler()
    s.open()
    s.open()  # second open is a no-op
    reset_counts(lib)
    s.close()
    s.close()
    assert call_count(lib, "nvmlShutdown") == 1
    with pytest.raises(SamplerError, match="before open"):
        s.sample(1.0)


def test_init_failure_raises_sampler_error_naming_the_driver(
    fake_nvml: FakeNvmlState,
) -> None:
    fake_nvml.init_error = NVML_ERROR_DRIVER_NOT_LOADED
    fake_nvml.write()
    with pytest.raises(SamplerError, match="driver is not loaded"):
        NvmlSampler().open()


def test_a_library_path_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "libnvidia-ml.so.1"
    with pytest.raises(SamplerError, match=f"NVML library {missing} does not exist"):
        NvmlSampler(library_path=str(missing)).open()


SUBPROCESS_SAMPLE = """
import sys
from gpuwarden.agent.nvml import NvmlSampler
from gpuwarden.agent.sampler import SamplerError
s = NvmlSampler(library_path=sys.argv[1] or None)
try:
    s.open()
except SamplerError as exc:
    print("SamplerError:", exc)
    raise SystemExit(3)
print(len(s.sample(0.0)), s.sample(0.0)[0].uuid)
s.close()
"""


def _real_nvml_on_this_machine() -> bool:
    import ctypes.util

    return ctypes.util.find_library("nvidia-ml") is not None


@pytest.mark.skipif(_real_nvml_on_this_machine(), reason="a real libnvidia-ml is installed")
def test_missing_library_raises_sampler_error_saying_so(fake_nvml: FakeNvmlState) -> None:
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_SAMPLE, ""],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert "NVML library libnvidia-ml.so.1 not found" in proc.stdout
    assert "NVIDIA driver installed" in proc.stdout


@pytest.mark.parametrize("how", ["env_for", "library_path"])
def test_a_subprocess_reads_the_fake_gpus(
    fake_nvml: FakeNvmlState, fake_nvml_lib: Path, how: str
) -> None:
    if how == "env_for":
        env, arg = fake_nvml.env(), ""
    else:
        env, arg = (
            {"PATH": "/usr/bin:/bin", "FAKE_NVML_STATE": str(fake_nvml.path)},
            str(fake_nvml_lib),
        )
    proc = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_SAMPLE, arg],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["4", GPU0]
