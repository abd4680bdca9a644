"""GPM smoke check on a real GPU: a torch matmul loop in fp32, then in bf16, seen through the
agent's own sampler (NvmlSampler, with its GPM fields).

Run on a machine with a Hopper-or-later GPU, the NVIDIA driver and torch with CUDA::

    .venv/bin/python tests/gpu/gpm_smoke.py [--phase-s 8] [--torch-python PYTHON]

It prints one line per second (phase, NVML utilisation, SM activity and occupancy, tensor,
FP32 and DRAM activity), then each phase's means and what was expected of them: SM activity
well above idle in both loads, the tensor pipes near idle in fp32 (torch's default keeps TF32
off for matmuls) and busy in bf16. Exit status 0 when the expectations hold, 1 when one does
not, 2 when it cannot run here (no GPU, no GPM, no torch).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

from gpuwarden.agent.nvml import NvmlSampler
from gpuwarden.agent.sampler import SamplerError
from gpuwarden.common.types import GpuSample

# The load: idle, then fp32 matmuls, then bf16 matmuls; the current phase goes to a file.
TORCH_JOB = """
import sys, time, pathlib, torch
phase_file, seconds = pathlib.Path(sys.argv[1]), float(sys.argv[2])
def phase(name):
    phase_file.write_text(name)
n = 8192
torch.backends.cuda.matmul.allow_tf32 = False
phase("idle")
time.sleep(seconds / 2)
for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    c = a @ b
    torch.cuda.synchronize()
    phase(name)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(10):
            c = a @ b
        torch.cuda.synchronize()
phase("done")
"""

COLUMNS = {  # field -> column heading (percent)
    "sm_active_pct": "sm",
    "sm_occupancy_pct": "occ",
    "tensor_active_pct": "tensor",
    "tensor_hmma_active_pct": "hmma",
    "fp32_active_pct": "fp32",
    "dram_active_pct": "dram",
}


def fmt(value: float | None) -> str:
    return "     -" if value is None else f"{value:6.1f}"


def row(phase: str, s: GpuSample) -> str:
    cells = [fmt(s.util_gpu_pct)] + [fmt(s.extra.get(c)) for c in COLUMNS]
    return f"{phase:>5} " + " ".join(cells)


def phase_means(lines: list[tuple[str, GpuSample]], phase: str, field: str) -> float | None:
    values = [s.extra[field] for p, s in lines if p == phase and field in s.extra]
    return mean(values) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase-s", type=float, default=8.0, help="seconds per load phase")
    parser.add_argument("--torch-python", default=sys.executable, help="python with torch")
    args = parser.parse_args()

    sampler = NvmlSampler()
    try:
        sampler.open()
    except SamplerError as exc:
        print(f"cannot run: {exc}")
        return 2
    try:
        return run(sampler, args.phase_s, args.torch_python)
    finally:
        sampler.close()


def run(sampler: NvmlSampler, phase_s: float, torch_python: str) -> int:
    first = sampler.sample(time.time())
    target = next((s for s in first if not s.parent_uuid and not s.errors), None)
    if target is None:
        print("cannot run: no readable whole (non-MIG) GPU")
        return 2
    time.sleep(1.0)
    second = next(s for s in sampler.sample(time.time()) if s.uuid == target.uuid)
    if not second.extra:
        print(f"cannot run: GPU {target.uuid} ({target.name}) gives no GPM fields")
        return 2
    print(f"GPU {target.index} {target.name} {target.uuid} minor {target.minor_number}")

    with tempfile.TemporaryDirectory(prefix="gpm-smoke-") as scratch:
        return watch(sampler, target, Path(scratch) / "phase", phase_s, torch_python)


def watch(
    sampler: NvmlSampler, target: GpuSample, phase_file: Path, phase_s: float, torch_python: str
) -> int:
    phase_file.write_text("start")
    job = subprocess.Popen(
        [torch_python, "-c", TORCH_JOB, str(phase_file), str(phase_s)],
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=target.uuid),
    )
    print("phase   util " + " ".join(f"{h:>6}" for h in COLUMNS.values()))
    lines: list[tuple[str, GpuSample]] = []
    try:
        deadline = time.monotonic() + 3 * phase_s + 180
        while job.poll() is None and time.monotonic() < deadline:
            time.sleep(1.0)
            phase = phase_file.read_text().strip()
            s = next((x for x in sampler.sample(time.time()) if x.uuid == target.uuid), None)
            if s is None:
                continue
            lines.append((phase, s))
            print(row(phase, s), flush=True)
    finally:
        if job.poll() is None:
            job.kill()
        job.wait()
    if job.returncode != 0:
        print(f"the torch job failed (exit {job.returncode})")
        return 2

    print("\nmeans per phase:")
    summary = {
        p: {c: phase_means(lines, p, c) for c in ("sm_active_pct", "tensor_active_pct")}
        for p in ("idle", "fp32", "bf16")
    }
    for p, values in summary.items():
        print(f"  {p:>5}: " + ", ".join(f"{c} {fmt(v).strip()}" for c, v in values.items()))
    checks = expectations(summary)
    for ok, text in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {text}")
    return 0 if all(ok for ok, _ in checks) else 1


def expectations(summary: dict[str, dict[str, float | None]]) -> list[tuple[bool, str]]:
    def get(phase: str, field: str) -> float:
        value = summary[phase][field]
        return -1.0 if value is None else value

    idle_sm = get("idle", "sm_active_pct")
    return [
        (get("fp32", "sm_active_pct") > max(idle_sm, 0) + 20, "fp32 matmuls raise SM activity"),
        (get("bf16", "sm_active_pct") > max(idle_sm, 0) + 20, "bf16 matmuls raise SM activity"),
        (
            0 <= get("fp32", "tensor_active_pct") < 10,
            "fp32 (TF32 off) leaves the tensor pipes idle",
        ),
        (get("bf16", "tensor_active_pct") > 20, "bf16 matmuls keep the tensor pipes busy"),
    ]


if __name__ == "__main__":
    sys.exit(main())
