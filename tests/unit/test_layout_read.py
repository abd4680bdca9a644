"""Paged reads (exports, tools) give what one long read gives: every matching report once,
in order, whatever the page size, a report listed twice by a job query included."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.collector.layout_read import RawQuery, Reader, read_reports, stored_reports
from gpuwarden.collector.store import Store, connect
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport

T0 = 1_700_000_000.0


def report(node: str, seq: int, end: float, starts: tuple[int | None, ...]) -> NodeReport:
    """One window per entry of ``starts``: job 77 of that start time, or no job (None)."""
    gpus = tuple(
        GpuWindow(
            uuid=f"GPU-{node}-{i}",
            index=i,
            samples=5,
            util_mean=float(seq),
            job=None if s is None else JobInfo(job_id="77", user="alice", start_time=s),
            allocated=s is not None,
        )
        for i, s in enumerate(starts)
    )
    return NodeReport(node=node, seq=seq, window_start=end - 5, window_end=end, gpus=gpus)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    store = Store(tmp_path / "db")
    reports = []
    for seq in range(1, 9):
        # two nodes ending at the same instants (ties broken by id), and reports holding two
        # fact sets of job 77 (a requeued run beside the first), listed twice by a job query
        reports.append(report("a", seq, T0 + 5 * seq, (100, 200 if seq % 3 == 0 else None)))
        reports.append(report("b", seq, T0 + 5 * seq, (None, 100)))
    store.write_reports(reports, T0)
    store.close()
    return tmp_path / "db"


@pytest.mark.parametrize(
    "q",
    [
        RawQuery(since=float("-inf")),
        RawQuery(node="b"),
        RawQuery(uuid="GPU-a-1"),
        RawQuery(job_id="77", since=T0 + 10, until=T0 + 35),
    ],
)
@pytest.mark.parametrize("page", [1, 2, 3, 1000])
def test_a_paged_read_gives_what_one_read_gives(db: Path, q: RawQuery, page: int) -> None:
    conn = connect(db, readonly=True)
    whole = list(read_reports(Reader(conn), conn, q))
    assert whole  # each query matches something
    paged = list(stored_reports(conn, q, page=page))
    assert [(r[0], r[3], [(g.uuid, g.job, jk) for g, jk in r[5]]) for r in paged] == [
        (r[0], r[3], [(g.uuid, g.job, jk) for g, jk in r[5]]) for r in whole
    ]
