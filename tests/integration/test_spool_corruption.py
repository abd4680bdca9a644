"""A damaged spool file is set aside and counted; the reports behind it are delivered."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gpuwarden.agent.spool import Spool
from gpuwarden.collector.server import Collector
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, NodeReport
from tests.fakenvml import FakeNvmlState
from tests.helpers import running_agent, wait_for


def spooled(spool: Spool, util: float) -> tuple[int, Path]:
    seq = spool.next_seq()
    report = NodeReport(
        node="n1",
        seq=seq,
        window_start=1_700_000_000 + seq % 1000,
        window_end=1_700_000_005 + seq % 1000,
        gpus=(GpuWindow(uuid="GPU-spooled", index=0, samples=5, util_max=util),),
    )
    spool.put(seq, report_to_pb(report).SerializeToString())
    return seq, spool.directory / f"{seq:020d}.pb"


async def test_truncated_garbled_and_empty_spool_files_do_not_stop_delivery(
    collector: Collector,
    fake_nvml: FakeNvmlState,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    _, first = spooled(spool, 10.0)
    _, truncated = spooled(spool, 11.0)
    _, garbled = spooled(spool, 12.0)
    _, empty = spooled(spool, 13.0)
    _, swapped = spooled(spool, 14.0)
    spooled(spool, 20.0)
    truncated.write_bytes(truncated.read_bytes()[:-7])
    garbled.write_bytes(bytes(b ^ 0x5A for b in garbled.read_bytes()))
    empty.write_bytes(b"")
    swapped.write_bytes(first.read_bytes())  # intact, but another report's
    damaged = {truncated.name, garbled.name, empty.name, swapped.name}

    caplog.set_level(logging.INFO)
    async with running_agent(collector, spool_dir) as agent:
        await wait_for(lambda: collector.store.count_reports() >= 2 + 3)  # the 2 + new ones
        await wait_for(lambda: agent.stats().corrupt == len(damaged))
        stats = agent.stats()
    records, _ = collector.store.history(uuid="GPU-spooled")
    assert sorted(r.gpu.util_max or 0 for r in records) == [10.0, 20.0]
    assert stats.corrupt == len(damaged) and stats.rejected == 0
    assert {p.name for p in (spool_dir / "corrupt").iterdir()} == damaged
    assert not list(spool_dir.glob("*.pb"))  # everything else was delivered and acked
    lines = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(lines) == len(damaged), lines
    assert all("moved to" in line and "corrupt" in line for line in lines)
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a damaged file"
