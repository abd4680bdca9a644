"""The store's write-ahead log gives its disk back: a reader that holds one snapshot while
ingest goes on lets the ``-wal`` file grow, and once that reader is gone the file is cut
back below the limit, by the next writes or by the housekeeping checkpoint when idle."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuwarden.collector.layout_read import stored_reports
from gpuwarden.collector.store import Store, connect
from gpuwarden.collector.store_conn import WAL_LIMIT_BYTES, wal_bytes
from gpuwarden.common.types import GpuWindow, NodeReport

NODES = 20


def report(node: str, seq: int) -> NodeReport:
    t = 1_700_000_000.0 + 5 * seq
    gpus = tuple(
        GpuWindow(uuid=f"GPU-{node}-{i}", index=i, samples=5, util_mean=float(seq % 97))
        for i in range(8)
    )
    return NodeReport(node=node, seq=seq, window_start=t - 5, window_end=t, gpus=gpus)


class Ingest:
    """Reports from ``NODES`` nodes, one transaction per round, as the collector writes them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seq = 0

    def rounds(self, n: int) -> None:
        for _ in range(n):
            self.seq += 1
            self.store.write_reports([report(f"n{k}", self.seq) for k in range(NODES)], 0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "db")
    yield s
    s.close()


def grow_behind_a_reader(store: Store, ingest: Ingest) -> sqlite3.Connection:
    """Ingest while another connection holds one snapshot, until the log is past the limit;
    returns that connection, its read transaction still open."""
    reader = connect(store.path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM reports").fetchone()
    while wal_bytes(store.path) <= 2 * WAL_LIMIT_BYTES:
        ingest.rounds(20)
    return reader


def test_the_wal_is_cut_back_once_the_long_reader_is_gone_and_ingest_goes_on(
    store: Store,
) -> None:
    ingest = Ingest(store)
    ingest.rounds(5)
    reader = grow_behind_a_reader(store, ingest)
    reader.execute("COMMIT")
    reader.close()
    ingest.rounds(100)  # a few automatic checkpoints' worth
    assert wal_bytes(store.path) <= WAL_LIMIT_BYTES
    assert store.count_reports() == NODES * ingest.seq  # nothing lost on the way


def test_an_idle_store_gives_its_wal_back_at_the_housekeeping_checkpoint(store: Store) -> None:
    ingest = Ingest(store)
    reader = grow_behind_a_reader(store, ingest)
    grown = wal_bytes(store.path)
    # while the reader holds its snapshot, the checkpoint neither waits nor cuts anything,
    # and ingest goes on beside it
    assert store.checkpoint() == grown
    ingest.rounds(1)
    reader.execute("COMMIT")
    reader.close()
    assert store.checkpoint() <= WAL_LIMIT_BYTES  # no write needed
    assert wal_bytes(store.path) <= WAL_LIMIT_BYTES
    ingest.rounds(3)  # the store writes on as before
    assert store.count_reports() == NODES * ingest.seq


def test_a_history_cut_at_its_limit_keeps_no_snapshot_that_would_hold_the_wal(
    store: Store,
) -> None:
    ingest = Ingest(store)
    ingest.rounds(50)
    records, truncated = store.history(node="n1", limit=3)
    assert truncated and len(records) == 3
    other = sqlite3.connect(store.path)
    busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    other.close()
    assert busy == 0 and wal_bytes(store.path) == 0


def test_an_export_paused_by_a_slow_consumer_does_not_hold_the_wal(store: Store) -> None:
    ingest = Ingest(store)
    ingest.rounds(5)
    export = stored_reports(connect(store.path, readonly=True))
    first = next(export)  # `gpuwarden export | less`: the reader stops here for a while
    ingest.rounds(250)  # ~50 MB of log behind a held snapshot
    assert wal_bytes(store.path) <= WAL_LIMIT_BYTES
    rest = list(export)
    keys = [(r[3], r[0]) for r in [first, *rest]]
    assert keys == sorted(set(keys))  # in order, none twice
    assert len(keys) >= 5 * NODES  # all it had when it began (and what came since, or not)
