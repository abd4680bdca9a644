"""A damaged spooled report is set aside and counted; the reports behind it are delivered.

Both layouts: the segment files of today's spool, and the one-file-per-report ``<seq>.pb``
files an agent of an earlier version left behind (drained after an upgrade)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gpuwarden.agent.spool import Spool, spooled_seqs
from gpuwarden.agent.spool_files import frame
from gpuwarden.agent.spool_segment import HEADER
from gpuwarden.collector.server import Collector
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import GpuWindow, NodeReport
from tests.fakenvml import FakeNvmlState
from tests.helpers import running_agent, wait_for


def report_bytes(seq: int, util: float) -> bytes:
    report = NodeReport(
        node="n1",
        seq=seq,
        window_start=1_700_000_000 + seq % 1000,
        window_end=1_700_000_005 + seq % 1000,
        gpus=(GpuWindow(uuid="GPU-spooled", index=0, samples=5, util_max=util),),
    )
    return report_to_pb(report).SerializeToString()


def spooled(spool: Spool, util: float) -> tuple[int, Path]:
    """A report spooled as an earlier version did: its own file ``<seq>.pb``."""
    seq = spool.next_seq()
    path = spool.directory / f"{seq:020d}.pb"
    path.write_bytes(frame(report_bytes(seq, util)))
    return seq, path


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


async def test_damaged_records_in_a_segment_are_set_aside_and_a_torn_tail_is_cut(
    collector: Collector,
    fake_nvml: FakeNvmlState,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    seqs = [spool.next_seq() for _ in range(4)]
    for seq, util in zip(seqs, [10.0, 11.0, 20.0, 13.0], strict=True):
        assert spool.put(seq, report_bytes(seq, util))
    spool.close()
    (segment,) = spool_dir.glob("*.seg")
    data = bytearray(segment.read_bytes())
    second = HEADER.size + len(report_bytes(seqs[0], 10.0))
    data[second + HEADER.size + 3] ^= 0x5A  # inside the second report: its CRC fails
    last = len(data.rstrip(b"\0")) - 5
    data[last:] = bytes(len(data) - last)  # the last report torn: its end never written
    segment.write_bytes(bytes(data))

    caplog.set_level(logging.INFO)
    async with running_agent(collector, spool_dir) as agent:
        await wait_for(lambda: collector.store.count_reports() >= 1 + 3)  # the first + new ones
        stats = agent.stats()
    records, _ = collector.store.history(uuid="GPU-spooled")
    assert sorted(r.gpu.util_max or 0 for r in records) == [10.0, 20.0]  # the good ones only
    assert stats.corrupt == 2 and stats.rejected == 0
    fourth = second + 2 * (HEADER.size + len(report_bytes(seqs[1], 11.0)))
    aside = {p.name for p in (spool_dir / "corrupt").iterdir()}
    assert aside == {f"{segment.name}.at-{second}", f"{segment.name}.at-{fourth}"}
    assert spooled_seqs(spool_dir) == []
    lines = [r.getMessage() for r in caplog.records if "damaged bytes" in r.getMessage()]
    assert len(lines) == 2 and all(str(segment) in line for line in lines), lines
