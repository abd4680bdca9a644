"""One agent's bad report never fails another agent's reports in the shared group commit."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from gpuwarden.collector.ingest import Ingestor
from gpuwarden.collector.state import ClusterState
from gpuwarden.collector.store import Store
from gpuwarden.collector.validate import ReportInvalid
from gpuwarden.common.types import GpuWindow, NodeReport


def report(node: str, seq: int, mem: int = 1 << 30) -> NodeReport:
    g = GpuWindow(uuid=f"GPU-{node}", index=0, samples=5, util_max=50.0, mem_used_max_bytes=mem)
    return NodeReport(node=node, seq=seq, window_start=95.0, window_end=100.0, gpus=(g,))


async def test_an_unstorable_report_is_refused_alone_and_the_batch_is_stored(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "db")
    ingestor = Ingestor(store, ClusterState())
    # Submitted before the writer runs, so all three share one transaction.
    futures = [
        ingestor.submit(report("a", 1)),
        ingestor.submit(report("b", 1, mem=2**63)),  # SQLite INTEGER cannot hold it
        ingestor.submit(report("c", 1)),
    ]
    ingestor.start()
    try:
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await ingestor.stop()
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], ReportInvalid)
    assert "cannot be stored" in str(results[1])
    assert store.last_seqs() == {"a": 1, "c": 1}
    assert store.count_windows() == 2
    store.close()


async def test_a_store_failure_for_everyone_is_not_blamed_on_one_report(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    ingestor = Ingestor(store, ClusterState())
    store.close()  # every write fails: nobody's report is invalid, all must be resent
    futures = [ingestor.submit(report("a", 1)), ingestor.submit(report("b", 1))]
    ingestor.start()
    try:
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await ingestor.stop()
    assert all(isinstance(r, Exception) for r in results)
    assert not any(isinstance(r, ReportInvalid) for r in results)


@pytest.mark.parametrize("bad", [dataclasses.replace(report("b", 2**63), seq=2**63)])
async def test_an_unstorable_seq_is_refused_alone(tmp_path: Path, bad: NodeReport) -> None:
    store = Store(tmp_path / "db")
    ingestor = Ingestor(store, ClusterState())
    futures = [ingestor.submit(report("a", 1)), ingestor.submit(bad)]
    ingestor.start()
    try:
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await ingestor.stop()
    assert results[0] is True and isinstance(results[1], ReportInvalid)
    store.close()
