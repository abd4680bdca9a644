"""Which worker processes a Dask release names (dask-jobqueue ``processes=N``)."""

from __future__ import annotations

from gpuwarden.collector.actions import worker_processes

NAMES = {
    "tcp://h:1": "SLURMCluster-1-0",
    "tcp://h:2": "SLURMCluster-1-1",
    "tcp://h:3": "SLURMCluster-10-0",
    "tcp://h:4": "SLURMCluster-2",
    "tcp://h:5": "SLURMCluster-1-x",
}


def test_every_process_of_a_multi_process_worker_job_is_named() -> None:
    assert worker_processes(NAMES, "SLURMCluster-1") == ["tcp://h:1", "tcp://h:2"]


def test_a_single_process_worker_is_named_exactly() -> None:
    assert worker_processes(NAMES, "SLURMCluster-2") == ["tcp://h:4"]
    assert worker_processes({**NAMES, "tcp://h:6": "SLURMCluster-1"}, "SLURMCluster-1") == [
        "tcp://h:6"
    ]


def test_no_match_names_nothing() -> None:
    assert worker_processes(NAMES, "SLURMCluster-3") == []
    assert worker_processes(NAMES, "SLURMCluster") == []
