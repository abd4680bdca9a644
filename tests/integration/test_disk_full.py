"""A full disk under the collector's store: clear status, NOT_SERVING, nothing lost, recovery.

The store lives on a small tmpfs mounted by the test (root is needed, as for the Slurm
tests); a filler file takes the free space while a real agent keeps streaming.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gpuwarden.agent.spool import Spool
from gpuwarden.collector.server import Collector
from tests.fakenvml import FakeNvmlState, default_gpu_uuid
from tests.helpers import gpuwarden_cmd, running_agent, wait_for

GPU0 = default_gpu_uuid(0)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("the disk-full tests need root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` (big writes, then the last pages one by one)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


async def serving(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        return int(resp.status)


async def test_a_full_disk_turns_the_collector_not_serving_and_nothing_is_lost(
    small_disk: Path,
    fake_nvml: FakeNvmlState,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_nvml.set(GPU0, util_gpu=40)
    collector = Collector(db_path=small_disk / "gpuwarden.db", listen="127.0.0.1:0")
    await collector.start()
    caplog.set_level(logging.INFO)
    try:
        async with running_agent(collector, tmp_path / "spool") as agent:
            await wait_for(lambda: collector.store.count_reports() >= 5)
            filler = fill(small_disk)
            await wait_for(lambda: collector.store_fault is not None, 20)
            assert "full" in (collector.store_fault or "")
            assert await serving(collector.port) == health_pb2.HealthCheckResponse.NOT_SERVING
            spooled = agent.stats().spooled
            await wait_for(lambda: agent.stats().spooled >= spooled + 5, 20)  # keeps sampling
            filler.unlink()  # space comes back: recovery by itself
            await wait_for(lambda: collector.store_fault is None, 40)
            assert await serving(collector.port) == health_pb2.HealthCheckResponse.SERVING
            await wait_for(lambda: agent.stats().spooled == 0, 40)
            produced = agent.stats().reports
        stored = collector.store.count_reports()
    finally:
        await collector.stop()
    # Outcomes nobody awaited log "exception was never retrieved" when collected; collect
    # now so that such a line (with its traceback) would show in this test's log.
    gc.collect()
    assert stored >= produced - 1  # every report, except maybe the last in flight at stop
    text = caplog.text
    assert "cannot rollback" not in text
    assert text.count("Traceback") == 0
    full_lines = [
        r
        for r in caplog.records
        if r.name.startswith("gpuwarden.collector") and "full" in r.getMessage()
    ]
    assert 1 <= len(full_lines) <= 3, [r.getMessage() for r in full_lines]


def test_the_collector_refuses_to_start_on_a_full_disk(small_disk: Path, tmp_path: Path) -> None:
    fill(small_disk)
    proc = subprocess.run(
        [
            *gpuwarden_cmd("collector", "--insecure", "--listen", "127.0.0.1:0"),
            "--state-dir",
            str(small_disk / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "the disk is full" in proc.stderr and "min_free_space" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_full_spool_disk_drops_the_oldest_reports_and_keeps_the_newest(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(small_disk / "spool")
    old = b"o" * 3000
    for _ in range(20):
        spool.put(spool.next_seq(), old)
    fill(small_disk)
    report = b"r" * 3000
    # Never raises: a full disk costs the oldest reports, not the agent. The spool's segment
    # holds space written in advance; the reports past it need new segments.
    for _ in range(300):
        seq = spool.next_seq()
        assert spool.put(seq, report)
        assert spool.read(seq) == report
    assert spool.dropped >= 20
    assert all(spool.read(s) == report for s in spool.pending())  # the newest were kept
    lines = [r.getMessage() for r in caplog.records if "spool" in r.getMessage()]
    assert any(str(small_disk / "spool") in line and "full" in line for line in lines), lines
    assert len(lines) <= 3, lines


async def test_an_agent_keeps_sampling_with_its_spool_disk_full(
    small_disk: Path, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    fake_nvml.set(GPU0, util_gpu=40)
    collector = Collector(db_path=tmp_path / "db", listen="127.0.0.1:0")
    await collector.start()
    await collector.stop()  # the collector is away: everything goes to the spool
    fill(small_disk)
    async with running_agent(collector, small_disk / "spool") as agent:
        await wait_for(lambda: agent.stats().reports >= 30, 30)
        stats = agent.stats()
    assert stats.samples > 100 and stats.dropped > 0
