"""Which worker processes a Dask release names (dask-jobqueue ``processes=N``)."""

from __future__ import annotations

from gpuwarden.collector.actions import worker_processes

NAMES = {
    "tcp://10.0.0.1:1": "SLURMCluster-1-0",
    "tcp://10.0.0.1:2": "SLURMCluster-1-1",
    "tcp://10.0.0.2:3": "SLURMCluster-10-0",
    "tcp://10.0.0.2:4": "SLURMCluster-10-1",
    "tcp://10.0.0.3:5": "SLURMCluster-2",
    "tcp://10.0.0.4:6": "SLURMCluster-3",
    "tcp://10.0.0.1:7": "SLURMCluster-1-x",
}


def test_every_process_of_a_multi_process_worker_job_is_named() -> None:
    assert worker_processes(NAMES, "SLURMCluster-1") == ["tcp://10.0.0.1:1", "tcp://10.0.0.1:2"]
    assert worker_processes(NAMES, "SLURMCluster-10") == ["tcp://10.0.0.2:3", "tcp://10.0.0.2:4"]


def test_a_single_process_worker_is_named_exactly() -> None:
    assert worker_processes(NAMES, "SLURMCluster-2") == ["tcp://10.0.0.3:5"]
    named = {**NAMES, "tcp://10.0.0.9:8": "SLURMCluster-1"}
    assert worker_processes(named, "SLURMCluster-1") == ["tcp://10.0.0.9:8"]


def test_what_does_not_look_like_one_job_names_nothing() -> None:
    assert worker_processes(NAMES, "SLURMCluster-4") == []
    # the cluster's prefix would take single-process jobs of several nodes: never
    single = {"tcp://10.0.0.1:1": "SLURMCluster-0", "tcp://10.0.0.2:1": "SLURMCluster-1"}
    assert worker_processes(single, "SLURMCluster") == []
    # one process of a numbered set is not a multi-process job
    assert worker_processes({"tcp://10.0.0.1:1": "w-0"}, "w") == []
    # a gap (w-1 is gone) is not the whole job either
    assert worker_processes({"tcp://10.0.0.1:1": "w-0", "tcp://10.0.0.1:2": "w-2"}, "w") == []
