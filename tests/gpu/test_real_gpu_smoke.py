"""Real-GPU smoke test for NvmlSampler: a torch matmul loop must show up in what it samples.

Run by hand on a GPU machine, in its own pytest run (the unit tests preload the fake NVML
into their process)::

    .venv/bin/python -m pytest tests/gpu/test_real_gpu_smoke.py -m gpu -s -q

torch must import in ``$GPUWARDEN_TORCH_PYTHON`` (default: this interpreter) with CUDA.
Skipped when no real NVML initialises, when ``FAKE_NVML_STATE`` is set, or without torch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuwarden.agent.nvml import NvmlSampler
from gpuwarden.agent.sampler import SamplerError
from gpuwarden.common.types import GpuSample

pytestmark = pytest.mark.gpu

TORCH_PYTHON = os.environ.get("GPUWARDEN_TORCH_PYTHON", sys.executable)
JOB_S = 20.0
SAMPLE_S = 4.0

# Holds ~1.5 GiB on the GPU and runs matmuls until killed or JOB_S elapse.
TORCH_JOB = """
import sys, time, pathlib, torch
ready, seconds = pathlib.Path(sys.argv[1]), float(sys.argv[2])
a = torch.randn(8192, 8192, device="cuda")
b = torch.randn(8192, 8192, device="cuda")
hold = torch.empty(256 * 1024 * 1024, dtype=torch.float32, device="cuda")  # 1 GiB
c = a @ b
torch.cuda.synchronize()
ready.write_text("ready")
end = time.monotonic() + seconds
while time.monotonic() < end:
    c = a @ b
    torch.cuda.synchronize()
"""


@pytest.fixture
def real_sampler() -> Iterator[NvmlSampler]:
    if os.environ.get("FAKE_NVML_STATE"):
        pytest.skip("FAKE_NVML_STATE is set: this test needs the real NVML")
    sampler = NvmlSampler()
    try:
        sampler.open()
    except SamplerError as exc:
        pytest.skip(f"no real NVML here: {exc}")
    import pynvml

    if hasattr(pynvml.nvmlLib, "fake_nvml_call_count"):
        sampler.close()
        pytest.skip("the fake NVML is preloaded in this process: run GPU tests on their own")
    yield sampler
    sampler.close()


def _torch_has_cuda() -> bool:
    try:
        probe = subprocess.run(
            [TORCH_PYTHON, "-c", "import torch; assert torch.cuda.is_available()"],
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _find(samples: list[GpuSample], uuid: str) -> GpuSample:
    return next(s for s in samples if s.uuid == uuid)


def test_a_torch_matmul_job_shows_utilisation_memory_and_its_pid(
    real_sampler: NvmlSampler, tmp_path: Path
) -> None:
    if not _torch_has_cuda():
        pytest.skip(f"torch with CUDA is not importable by {TORCH_PYTHON}")
    first = real_sampler.sample(time.time())
    target = next((s for s in first if not s.parent_uuid and not s.errors), None)
    if target is None:
        pytest.skip("no readable non-MIG GPU on this machine")
    before = target.mem_used_bytes
    print(f"\nGPU {target.index} {target.name} {target.uuid}: before the job {target}")

    ready = tmp_path / "ready"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=target.uuid)
    job = subprocess.Popen(
        [TORCH_PYTHON, "-c", TORCH_JOB, str(ready), str(JOB_S)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            if job.poll() is not None:
                pytest.fail(
                    f"the torch job exited early:\n{job.stderr.read() if job.stderr else ''}"
                )
            if time.monotonic() > deadline:
                pytest.fail("the torch job did not get ready within 120 s")
            time.sleep(0.1)
        during: list[GpuSample] = []
        end = time.monotonic() + SAMPLE_S
        while time.monotonic() < end:
            during.append(_find(real_sampler.sample(time.time()), target.uuid))
            time.sleep(0.5)
    finally:
        job.send_signal(signal.SIGTERM)
        try:
            job.wait(timeout=30)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()

    utils = [s.util_gpu_pct for s in during]
    used = [s.mem_used_bytes for s in during]
    pids = sorted({p.pid for s in during for p in s.processes})
    print(f"torch pid {job.pid}; {len(during)} samples during the job")
    print(f"util_gpu_pct: {utils}")
    print(f"mem_used_bytes: before {before}, during {used}")
    print(f"power_w: {[s.power_w for s in during]}, temperature_c: {during[-1].temperature_c}")
    print(f"processes seen: {sorted({(p.pid, p.name) for s in during for p in s.processes})}")

    assert all(s.errors == () for s in during)
    assert max(u for u in utils if u is not None) > 0
    assert before is not None
    assert max(u for u in used if u is not None) > before
    assert job.pid in pids, f"torch pid {job.pid} not among the GPU's processes {pids}"
