"""What GPM adds to one NvmlSampler tick, against the fake libnvidia-ml.so.1.

    .venv/bin/python bench/gpm_tick.py [--gpus 8] [--ticks 2000]

Builds the fake library in a temporary folder, runs ``--ticks`` ticks over ``--gpus`` GPUs
without GPM, with GPM on every GPU, and with every GPU in MIG mode (2 instances, GPM per
instance), and prints the time per tick and per device and the NVML calls per tick. The fake
re-reads its state file on every call, so the absolute times are the fake's, not a driver's:
compare the call counts, and the times only with each other.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pynvml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuwarden.agent.nvml import NvmlSampler
from tests.fakenvml import (
    STATE_ENV,
    FakeNvmlState,
    build_fake_nvml,
    preload,
)

CALLS = (
    "nvmlDeviceGetUtilizationRates",
    "nvmlGpmSampleGet",
    "nvmlGpmMigSampleGet",
    "nvmlGpmMetricsGet",
)
METRICS = {
    pynvml.NVML_GPM_METRIC_SM_UTIL: 40.0,
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 10.0,
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 20.0,
}


def run(state: FakeNvmlState, ticks: int, lib: object) -> tuple[float, int, dict[str, int]]:
    from tests.fakenvml import call_count, reset_counts

    state.write()
    s = NvmlSampler(proc_root=state.path.parent)
    s.open()
    s.sample(0.0)
    reset_counts(lib)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    devices = 0
    for t in range(ticks):
        devices = len(s.sample(float(t)))
    elapsed = time.perf_counter() - t0
    counts = {c: call_count(lib, c) // ticks for c in CALLS}  # type: ignore[arg-type]
    s.close()
    return elapsed / ticks, devices, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--ticks", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lib = preload(build_fake_nvml(Path(tmp)))
        state = FakeNvmlState.with_gpus(Path(tmp) / "state.txt", args.gpus)
        os.environ[STATE_ENV] = str(state.path)
        cases = []
        cases.append(("no GPM", run(state, args.ticks, lib)))
        for gpu in state.gpus:
            gpu.gpm_supported = True
            gpu.gpm_metrics = dict(METRICS)
        cases.append(("GPM", run(state, args.ticks, lib)))
        for gpu in state.gpus:
            state.enable_mig(gpu.uuid, instances=2)
            for mig in gpu.mig:
                mig.gpm_metrics = dict(METRICS)
        cases.append(("MIG+GPM", run(state, args.ticks, lib)))
    print(f"{args.gpus} GPUs, {args.ticks} ticks, fake NVML")
    for name, (per_tick, devices, counts) in cases:
        calls = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        print(
            f"  {name:8} {devices:3d} devices: {per_tick * 1e3:7.3f} ms/tick, "
            f"{per_tick / devices * 1e6:6.1f} us/device; calls/tick: {calls}"
        )


if __name__ == "__main__":
    main()
