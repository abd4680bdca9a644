#!/usr/bin/env python3
"""What the agent costs a GPU node: CPU and memory of ``gpuwarden agent`` beside a bare loop.

    .venv/bin/python bench/agent_overhead.py [--gpus 8] [--seconds 60] [--warmup 8]

Builds the fake ``libnvidia-ml.so.1`` (the test suite's build helper) with ``--gpus`` GPUs,
starts an in-process collector (SQLite in a temporary folder, plaintext loopback) and two
processes over the same fake library, side by side in the same run:

* ``gpuwarden agent`` (NVML sampler, 1 s sampling, 5 s reports, Slurm off), streaming to
  the collector and spooling every report as in production;
* the floor: a bare loop that calls pynvml for the same per-GPU values every second
  (utilisation, memory, power, temperature, processes) and does nothing else.

After ``--warmup`` seconds it reads each process's CPU time from /proc over ``--seconds``
and prints CPU as a percentage of one core, the agent/floor ratio, the resident memory
(VmRSS, and VmHWM, its peak) of both, what an interpreter that only imports the agent's
modules holds, and how many reports the collector stored (to show the agent really worked).
The fake re-reads its state file on every call, so the floor includes the fake's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuwarden.collector.server import Collector
from tests.fakenvml import FakeNvmlState, build_fake_nvml, env_for

CLK_TCK = os.sysconf("SC_CLK_TCK")

BARE_LOOP = """
import time, pynvml
pynvml.nvmlInit()
handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
uuids = [pynvml.nvmlDeviceGetUUID(h) for h in handles]
interval = float(__import__("sys").argv[1])
nxt = time.monotonic()
while True:
    for h in handles:
        pynvml.nvmlDeviceGetUtilizationRates(h)
        pynvml.nvmlDeviceGetMemoryInfo(h)
        pynvml.nvmlDeviceGetPowerUsage(h)
        pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
        pynvml.nvmlDeviceGetComputeRunningProcesses(h)
    nxt += interval
    time.sleep(max(0.0, nxt - time.monotonic()))
"""

IMPORTS_ONLY = """
import time
import gpuwarden.cli, gpuwarden.agent.config, gpuwarden.agent.main, gpuwarden.agent.nvml
gpuwarden.cli.build_parser(agent_only=True)
print("imported", flush=True)
time.sleep(60)
"""


def cpu_seconds(pid: int) -> float:
    """On-CPU time of the process's live threads, in ns resolution (schedstat), or the
    clock-tick counts of /proc/PID/stat where schedstat is missing."""
    try:
        return (
            sum(
                int(t.joinpath("schedstat").read_text().split()[0])
                for t in Path(f"/proc/{pid}/task").iterdir()
            )
            / 1e9
        )
    except (OSError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


async def imports_only_rss(env: dict[str, str]) -> int:
    p = subprocess.Popen(
        [sys.executable, "-c", IMPORTS_ONLY], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None
        await asyncio.to_thread(p.stdout.readline)
        return status_kib(p.pid, "VmRSS")
    finally:
        p.kill()
        p.wait()


async def main(gpus: int, seconds: float, warmup: float) -> None:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        lib = build_fake_nvml(tmp / "lib")
        state = FakeNvmlState.with_gpus(tmp / "nvml-state", gpus)
        state.write()
        env = env_for(lib.parent, state.path)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        collector = Collector(db_path=tmp / "db.sqlite")
        await collector.start()
        cfg = tmp / "agent.toml"
        cfg.write_text(
            "[agent]\n"
            'node = "bench1"\n'
            f'collector = "127.0.0.1:{collector.port}"\n'
            "insecure = true\n"
            'slurm = "off"\n'
            'sample_interval = "1s"\n'
            'report_interval = "5s"\n'
            f'spool_dir = "{tmp / "spool"}"\n'
        )
        agent = subprocess.Popen(
            [sys.executable, "-m", "gpuwarden", "agent", "--config", str(cfg)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        bare = subprocess.Popen([sys.executable, "-c", BARE_LOOP, "1.0"], env=env)
        procs = {"agent": agent, "bare pynvml loop": bare}
        try:
            await asyncio.sleep(warmup)
            for name, p in procs.items():
                if p.poll() is not None:
                    raise SystemExit(f"{name} exited early with status {p.returncode}")
            stored0 = collector.store.count_reports()
            before = {n: cpu_seconds(p.pid) for n, p in procs.items()}
            t0 = time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - t0
            after = {n: cpu_seconds(p.pid) for n, p in procs.items()}
            rss = {
                n: (status_kib(p.pid, "VmRSS"), status_kib(p.pid, "VmHWM"))
                for n, p in procs.items()
            }
            stored = collector.store.count_reports() - stored0
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                p.wait(10)
            await collector.stop()
        imports_kib = await imports_only_rss(env)
    pct = {n: 100.0 * (after[n] - before[n]) / elapsed for n in procs}
    floor = pct["bare pynvml loop"]
    print(f"agent overhead: {gpus} fake GPUs, 1 s sampling, 5 s reports, {elapsed:.0f} s measured")
    print(f"{'process':<18} {'CPU % of a core':>16} {'RSS':>10} {'peak RSS':>10}")
    for n in procs:
        print(f"{n:<18} {pct[n]:>16.3f} {mib(rss[n][0]):>10} {mib(rss[n][1]):>10}")
    ratio = pct["agent"] / floor if floor > 0 else float("inf")
    print(f"agent / floor CPU: {ratio:.2f}x")
    print(f"interpreter with the agent's modules imported: {mib(imports_kib)}")
    print(f"reports stored by the collector while measuring: {stored}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    a = ap.parse_args()
    asyncio.run(main(a.gpus, a.seconds, a.warmup))
