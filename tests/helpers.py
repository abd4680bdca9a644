"""Helpers and fixtures for tests that run a collector and agents (in-process or as
subprocesses of the real ``gpuwarden`` command)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from gpuwarden.agent.attribution import Attributor, NoAttribution
from gpuwarden.agent.client import ReportStreamer
from gpuwarden.agent.report_wire import varint as varint  # for wire bytes built by hand
from gpuwarden.agent.runtime import Agent
from gpuwarden.agent.sampler import Sampler
from gpuwarden.agent.spool import Spool
from gpuwarden.collector.server import Collector
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, NodeReport

REPO = Path(__file__).resolve().parent.parent


def spool_reports(spool: Spool, count: int, node: str = "n1", util: float = 10.0) -> list[int]:
    """Spool ``count`` one-GPU reports of ``node`` (numbered by the spool); their seqs."""
    seqs = []
    for _ in range(count):
        seq = spool.next_seq()
        report = NodeReport(
            node=node,
            seq=seq,
            window_start=1_700_000_000,
            window_end=1_700_000_005,
            gpus=(GpuWindow(uuid=f"GPU-{node}", index=0, samples=5, util_max=util),),
        )
        spool.put(seq, report_to_pb(report).SerializeToString())
        seqs.append(seq)
    return seqs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(
    predicate: Callable[[], object], timeout_s: float = 20.0, interval_s: float = 0.05
) -> None:
    """Poll ``predicate`` (sync) until it is truthy; fail the test with a clear message."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s: {predicate}")


def wait_for_sync(predicate: Callable[[], object], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s} s: {predicate}")


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[Collector]:
    """A collector in this process: SQLite in tmp_path, insecure gRPC on a free port."""
    c = Collector(db_path=tmp_path / "collector.db", listen="127.0.0.1:0")
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


def gpuwarden_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpuwarden", *args]


def agent_args(port: int, spool_dir: Path, *, sample_s: float, report_s: float) -> list[str]:
    """``gpuwarden agent`` on NVML (the fake library), Slurm off, as node ``n1``, reporting
    to a plaintext collector on ``port``: the arguments after the program."""
    return [
        "agent",
        "--insecure",
        "--sampler",
        "nvml",
        "--slurm",
        "off",
        "--node",
        "n1",
        "--collector",
        f"127.0.0.1:{port}",
        "--spool-dir",
        str(spool_dir),
        "--sample-interval",
        str(sample_s),
        "--report-interval",
        str(report_s),
    ]


def copy_of_the_repository(dest: Path) -> Path:
    """The repository's files (tracked and new, not ignored ones) copied to ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in files:
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def run_gpuwarden(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``gpuwarden ARGS`` to the end, as a user would; output captured as text."""
    return subprocess.run(
        gpuwarden_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


class Proc:
    """A ``gpuwarden`` subprocess whose output goes to a log file (read it on failure)."""

    def __init__(
        self,
        args: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        *,
        program: list[str] | None = None,
    ) -> None:
        """``program`` (default: this interpreter's ``-m gpuwarden``) is run with ``args``."""
        self.log = log
        self._fh = log.open("ab")
        self.p = subprocess.Popen(
            [*(program or gpuwarden_cmd()), *args],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=REPO,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout_s: float = 15.0) -> int:
        if self.p.poll() is None:
            self.p.terminate()
        try:
            return self.p.wait(timeout_s)
        finally:
            self._fh.close()

    def kill(self) -> None:
        self.p.kill()
        self.p.wait(10)
        self._fh.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Collects subprocesses so they are always stopped, even when a test fails."""
    started: list[Proc] = []
    yield started
    for p in started:
        if p.p.poll() is None:
            p.p.kill()
            p.p.wait(10)


@contextlib.asynccontextmanager
async def running_agent(
    collector: Collector,
    spool_dir: Path,
    *,
    node: str = "n1",
    attributor: Attributor | None = None,
    sampler: Sampler | None = None,
    sample_interval_s: float = 0.05,
    report_interval_s: float = 0.2,
) -> AsyncIterator[Agent]:
    """An agent in this process (NvmlSampler over the fake library by default) streaming
    to ``collector``; stopped (last window flushed) on exit."""
    from gpuwarden.agent.nvml import NvmlSampler

    agent = Agent(
        node=node,
        sampler=sampler or NvmlSampler(),
        attributor=attributor or NoAttribution(),
        spool=Spool(spool_dir),
        collector=f"127.0.0.1:{collector.port}",
        sample_interval_s=sample_interval_s,
        report_interval_s=report_interval_s,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def streaming(streamer: ReportStreamer) -> AsyncIterator[ReportStreamer]:
    """``streamer`` sending its spool from a thread of its own; stopped (and its thread
    ended) on exit."""
    thread = threading.Thread(target=streamer.run, name="test-streamer", daemon=True)
    thread.start()
    try:
        yield streamer
    finally:
        streamer.stop()
        await asyncio.to_thread(thread.join, 15)
        assert not thread.is_alive(), "the streamer did not stop"


def sim_agent(
    collector: Collector, tmp_path: Path, node: str = "gpu01", *, gpus: int = 2, seed: int = 0
) -> contextlib.AbstractAsyncContextManager[Agent]:
    """An in-process agent of one simulated node (its own jobs) streaming to ``collector``."""
    from gpuwarden.sim import SimAttributor, SimNode, SimSampler

    sim = SimNode(node, gpus=gpus, seed=seed)
    return running_agent(
        collector,
        tmp_path / f"spool-{node}",
        node=node,
        sampler=SimSampler(sim),
        attributor=SimAttributor(sim),
    )
