#!/usr/bin/env python3
"""What the agent costs a GPU node: CPU and memory of ``gpuwarden agent`` beside a bare loop.

    .venv/bin/python bench/agent_overhead.py [--gpus 8] [--seconds 60] [--warmup 8]
        [--before REV] [--tls]

Builds the fake ``libnvidia-ml.so.1`` (the test suite's build helper) with ``--gpus`` GPUs,
starts an in-process collector (SQLite in a temporary folder, plaintext loopback, or mTLS
with certificates from a throw-away CA with ``--tls``) and two
processes over the same fake library, side by side in the same run:

* ``gpuwarden agent`` (NVML sampler, 1 s sampling, 5 s reports, Slurm off), streaming to
  the collector and spooling every report as in production;
* the floor: a bare loop that calls pynvml for the same per-GPU values every second
  (utilisation, memory, power, temperature, processes) and does nothing else.

With ``--before REV`` a third process runs the agent of that git revision (its sources
from ``git archive``, laid out as installed), against the same collector and fake library:
before and after in one run.

After ``--warmup`` seconds it reads each process's CPU time from /proc over ``--seconds``
and prints CPU as a percentage of one core (on-CPU time of each thread from schedstat, in
ns; beside it utime + stime in 10 ms clock ticks, coarse: measure a minute or more),
each agent's CPU split by thread (its main thread: the streaming thread, or the event
loop of an asyncio agent; its other Python threads: sampling; native threads: gRPC's), the
agent/floor ratio, the resident memory
(VmRSS, and VmHWM, its peak) of both, what an interpreter that only imports the agent's
modules holds, and how many reports the collector stored (to show the agent really worked).
The fake re-reads its state file on every call, so the floor includes the fake's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuwarden.collector.server import Collector
from tests.fakenvml import FakeNvmlState, build_fake_nvml, env_for
from tests.pki import TestCA, server_tls

REPO = Path(__file__).resolve().parent.parent
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


def thread_cpu(pid: int) -> dict[str, float]:
    """On-CPU seconds of the process's live threads by group, in ns resolution (schedstat):
    the main thread (the agent's streaming thread; an asyncio agent's event loop), the other
    Python threads (the sampling thread) and native threads (gRPC's own, named by gRPC:
    event_engine, grpc_global_timer, ...)."""
    out: dict[str, float] = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            cpu = int(t.joinpath("schedstat").read_text().split()[0]) / 1e9
            comm = t.joinpath("comm").read_text().strip()
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        group = "main" if t.name == str(pid) else "python" if comm == "python" else "grpc"
        out[group] = out.get(group, 0.0) + cpu
    return out


def cpu_seconds(pid: int) -> float:
    """On-CPU seconds of the process's live threads, in ns resolution (schedstat). The
    agents' and the loop's threads live as long as they do; utime + stime in /proc/PID/stat
    counts in 10 ms clock ticks, ~25 ticks in 150 s at 0.17 %: too coarse for a ratio."""
    return sum(thread_cpu(pid).values())


def tick_cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread, also ended ones), clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def source_tree(rev: str, dest: Path) -> Path:
    """The sources of git revision ``rev`` laid out as installed (``gpuwarden.agent`` from
    ``agent/`` and so on); the folder to put first on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "archive", rev], cwd=REPO, capture_output=True, check=True
    ).stdout
    src = dest / "src"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(src, filter="data")
    farm = dest / "farm" / "gpuwarden"
    farm.mkdir(parents=True)
    for entry in (src / "gpuwarden").iterdir():
        (farm / entry.name).symlink_to(entry)
    for sub in ("agent", "collector", "proto", "sim", "tui"):
        (farm / sub).symlink_to(src / sub)
    return farm.parent


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


async def imports_only_rss(env: dict[str, str]) -> int:
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-c", IMPORTS_ONLY, env=env, stdout=subprocess.PIPE
    )
    try:
        assert p.stdout is not None
        await p.stdout.readline()
        return status_kib(p.pid, "VmRSS")
    finally:
        p.kill()
        await p.wait()


async def start_agent(
    tmp: Path, name: str, port: int, env: dict[str, str], ca: TestCA | None
) -> asyncio.subprocess.Process:
    cfg = tmp / f"{name}.toml"
    if ca is None:
        transport = "insecure = true"
    else:
        cert = ca.issue(name, role="node")
        transport = f'tls_ca = "{ca.ca}"\ntls_cert = "{cert.cert}"\ntls_key = "{cert.key}"'
    lines = [
        "[agent]",
        f'node = "{name}"',
        f'collector = "127.0.0.1:{port}"',
        transport,
        'slurm = "off"',
        'sample_interval = "1s"',
        'report_interval = "5s"',
        f'spool_dir = "{tmp / ("spool-" + name)}"',
    ]
    cfg.write_text("\n".join(lines) + "\n")
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gpuwarden", "agent", "--config", str(cfg)),
        env=env,
        stderr=subprocess.DEVNULL,
        cwd=tmp,  # not the repository: ``-m`` puts the working folder first on sys.path
    )


async def main(gpus: int, seconds: float, warmup: float, before: str | None, tls: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        lib = build_fake_nvml(tmp / "lib")
        state = FakeNvmlState.with_gpus(tmp / "nvml-state", gpus)
        state.write()
        env = env_for(lib.parent, state.path)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        ca = TestCA(tmp / "pki") if tls else None
        collector = Collector(db_path=tmp / "db.sqlite", tls=None if ca is None else server_tls(ca))
        await collector.start()
        agent = await start_agent(tmp, "bench1", collector.port, env, ca)
        bare = await asyncio.create_subprocess_exec(sys.executable, "-c", BARE_LOOP, "1.0", env=env)
        procs = {"agent": agent, "bare pynvml loop": bare}
        agents = ["agent"]
        if before is not None:
            farm = source_tree(before, tmp / "before")
            env_before = {**env, "PYTHONPATH": f"{farm}:{env.get('PYTHONPATH', '')}"}
            procs[f"agent {before}"] = await start_agent(
                tmp, "bench0", collector.port, env_before, ca
            )
            agents.append(f"agent {before}")
        try:
            await asyncio.sleep(warmup)
            for name, p in procs.items():
                if p.returncode is not None:
                    raise SystemExit(f"{name} exited early with status {p.returncode}")
            stored0 = collector.store.count_reports()
            cpu0 = {n: cpu_seconds(p.pid) for n, p in procs.items()}
            ticks0 = {n: tick_cpu_seconds(p.pid) for n, p in procs.items()}
            threads0 = {n: thread_cpu(procs[n].pid) for n in agents}
            t0 = time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - t0
            cpu1 = {n: cpu_seconds(p.pid) for n, p in procs.items()}
            ticks1 = {n: tick_cpu_seconds(p.pid) for n, p in procs.items()}
            threads1 = {n: thread_cpu(procs[n].pid) for n in agents}
            rss = {
                n: (status_kib(p.pid, "VmRSS"), status_kib(p.pid, "VmHWM"))
                for n, p in procs.items()
            }
            stored = collector.store.count_reports() - stored0
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                await asyncio.wait_for(p.wait(), 10)
            await collector.stop()
        imports_kib = await imports_only_rss(env)
    pct = {n: 100.0 * (cpu1[n] - cpu0[n]) / elapsed for n in procs}
    ticks = {n: 100.0 * (ticks1[n] - ticks0[n]) / elapsed for n in procs}
    floor = pct["bare pynvml loop"]
    print(
        f"agent overhead: {gpus} fake GPUs, 1 s sampling, 5 s reports, "
        f"{'mTLS' if tls else 'plaintext'}, {elapsed:.0f} s measured"
    )
    print(f"{'process':<18} {'CPU % of a core':>16} {'(ticks)':>8} {'RSS':>10} {'peak RSS':>10}")
    for n in procs:
        print(f"{n:<18} {pct[n]:>16.4f} {ticks[n]:>8.3f} {mib(rss[n][0]):>10} {mib(rss[n][1]):>10}")
    for n in agents:
        t0, t1 = threads0[n], threads1[n]
        by_thread = {g: 100.0 * (t1[g] - t0.get(g, 0.0)) / elapsed for g in t1}
        print(
            f"{n} CPU by thread (schedstat): "
            f"main {by_thread.get('main', 0.0):.3f} %, "
            f"other Python threads {by_thread.get('python', 0.0):.3f} %, "
            f"native (gRPC) threads {by_thread.get('grpc', 0.0):.3f} %"
        )
        ratio = pct[n] / floor if floor > 0 else float("inf")
        print(f"{n} / floor CPU: {ratio:.3f}x")
    print(f"interpreter with the agent's modules imported: {mib(imports_kib)}")
    print(f"reports stored by the collector while measuring: {stored}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--before", metavar="REV", help="also run the agent of this git revision")
    ap.add_argument("--tls", action="store_true", help="mTLS between agents and collector")
    a = ap.parse_args()
    asyncio.run(main(a.gpus, a.seconds, a.warmup, a.before, a.tls))
