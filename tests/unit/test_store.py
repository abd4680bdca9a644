"""The SQLite store: de-duplication, queries, retention, and refusing what it cannot read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gpuwarden.collector.store import Store, StoreError
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, ProcessInfo


def report(node: str, seq: int, t: float, job: str | None = None) -> NodeReport:
    return NodeReport(
        node=node,
        seq=seq,
        window_start=t - 5,
        window_end=t,
        gpus=(
            GpuWindow(
                uuid=f"GPU-{node}-0",
                index=0,
                samples=5,
                util_max=float(seq),
                processes=(ProcessInfo(11, 1 << 30, "python"),),
                job=JobInfo(job_id=job, user="alice") if job else None,
                allocated=bool(job),
            ),
            GpuWindow(uuid=f"GPU-{node}-1", index=1, samples=5, util_max=None),
        ),
    )


def test_duplicates_by_node_and_seq_are_stored_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    assert store.write_reports([report("a", 1, 100), report("a", 2, 105)], 0) == [True, True]
    assert store.write_reports([report("a", 2, 105), report("b", 2, 105)], 0) == [False, True]
    assert store.count_reports() == 3
    assert store.count_windows() == 6
    assert store.last_seqs() == {"a": 2, "b": 2}


def test_history_filters_round_trip_the_whole_window(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    store.write_reports(
        [report("a", i, 100 + 5 * i, job="77" if i > 2 else None) for i in range(1, 6)], 0
    )
    by_job, truncated = store.history(job_id="77")
    assert [r.window_end for r in by_job] == [115, 120, 125] and not truncated
    assert by_job[0].gpu.job == JobInfo(job_id="77", user="alice")
    assert by_job[0].gpu.processes == (ProcessInfo(11, 1 << 30, "python"),)
    limited, truncated = store.history(node="a", since=110, limit=2)
    assert len(limited) == 2 and truncated
    gpu1, _ = store.history(uuid="GPU-a-1", until=110)
    assert [r.gpu.util_max for r in gpu1] == [None, None]  # missing stays missing


def test_retention_deletes_old_windows_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    store.write_reports([report("a", i, 100 * i) for i in range(1, 5)], 0)
    assert store.prune(older_than=250) == 4
    raw, _ = store.history(node="a", resolution=0)
    assert [r.window_end for r in raw] == [300, 300, 400, 400]


def test_store_from_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="schema version 99"):
        Store(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta").fetchone() == ("99",)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open store"):
        Store(path)
    assert path.read_bytes() == b"this is not sqlite" * 100
