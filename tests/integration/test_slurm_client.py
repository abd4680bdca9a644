"""SlurmClient against the real local Slurms: requeue, requeuehold, cancel and their refusals,
with the CLI backend on 22.05 and 25.11 and the pyslurm backend on 25.11."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("slurm_fixtures")
from slurm_fixtures import (  # noqa: E402
    SlurmCluster,
    controller_stopped,
    ensure_pyslurm,
    job_field,
    submit,
    wait_state,
)

from gpuwarden.slurm import (  # noqa: E402
    CliSlurmClient,
    Outcome,
    PyslurmClient,
    SlurmClient,
    make_slurm_client,
)
from gpuwarden.slurm import pyslurm_client as pyslurm_module  # noqa: E402
from gpuwarden.slurm.pyslurm_client import pyslurm_version  # noqa: E402

pytest_plugins = ("slurm_fixtures",)  # the slurm_cluster fixture
pytestmark = pytest.mark.slurm

SLEEP = "sleep 600"


def backend_client(backend: str, timeout_s: float) -> SlurmClient:
    if backend == "cli":
        return CliSlurmClient(timeout_s=timeout_s)
    client = make_slurm_client(backend, timeout_s=timeout_s)
    assert isinstance(client, PyslurmClient)
    return client


@pytest.fixture
def client(slurm_cluster: SlurmCluster, slurm_backend: str) -> SlurmClient:
    return backend_client(slurm_backend, timeout_s=5.0)


def test_requeue_returns_running_job_to_pending_and_it_runs_again_with_one_more_restart(
    client: SlurmClient,
) -> None:
    job_id = submit(SLEEP, "-J", "gw-t-requeue")
    wait_state(job_id, "RUNNING")
    result = client.requeue(job_id)
    assert result.outcome is Outcome.DONE, result
    assert wait_state(job_id, {"PENDING", "REQUEUED"}, timeout=5) in {"PENDING", "REQUEUED"}
    wait_state(job_id, "RUNNING", timeout=30)  # cred_expire=5: back in ~5-6 s
    job = client.job(job_id)
    assert job is not None and job.restart_count == 1 and job.running


def test_requeuehold_leaves_the_job_pending_and_held(client: SlurmClient) -> None:
    job_id = submit(SLEEP, "-J", "gw-t-requeuehold")
    wait_state(job_id, "RUNNING")
    result = client.requeue(job_id, hold=True)
    assert result.outcome is Outcome.DONE, result
    wait_state(job_id, "PENDING", timeout=5)
    time.sleep(7)  # longer than cred_expire: an unheld requeued job would run again by now
    job = client.job(job_id)
    assert job is not None and job.state == "PENDING"
    assert job_field(job_id, "Reason") == "job_requeued_in_held_state"
    assert job_field(job_id, "Priority") == "0"


def test_no_requeue_job_is_refused_and_keeps_running(client: SlurmClient) -> None:
    job_id = submit(SLEEP, "-J", "gw-t-norequeue", "--no-requeue")
    wait_state(job_id, "RUNNING")
    result = client.requeue(job_id)
    assert result.outcome is Outcome.NOT_REQUEUEABLE, result
    job = client.job(job_id)
    assert job is not None and job.running and job.restart_count == 0


def test_cancel_ends_a_running_job(client: SlurmClient) -> None:
    job_id = submit(SLEEP, "-J", "gw-t-cancel")
    wait_state(job_id, "RUNNING")
    result = client.cancel(job_id)
    assert result.outcome is Outcome.DONE, result
    assert wait_state(job_id, "CANCELLED", timeout=10) == "CANCELLED"


def test_finished_job_is_refused_and_not_run_again(client: SlurmClient) -> None:
    job_id = submit("true", "-J", "gw-t-finished")
    wait_state(job_id, "COMPLETED", timeout=30)
    for result in (
        client.requeue(job_id),
        client.requeue(job_id, hold=True),
        client.cancel(job_id),
    ):
        assert result.outcome is Outcome.NOT_RUNNING, result
    time.sleep(1.5)
    job = client.job(job_id)
    assert job is not None and job.state == "COMPLETED" and job.restart_count == 0


def test_pending_job_is_refused_as_pending(client: SlurmClient) -> None:
    job_id = submit(SLEEP, "-J", "gw-t-pending", "--hold")
    wait_state(job_id, "PENDING")
    assert client.requeue(job_id).outcome is Outcome.PENDING
    assert client.cancel(job_id).outcome is Outcome.PENDING


def test_unknown_job_id(client: SlurmClient) -> None:
    assert client.job("999999") is None
    assert client.job("999999_3") is None
    result = client.requeue("999999")
    assert result.outcome is Outcome.UNKNOWN_JOB, result
    assert client.cancel("999998").outcome is Outcome.UNKNOWN_JOB


def test_malformed_job_id_is_refused_naming_it(client: SlurmClient) -> None:
    for bad in ("12;reboot", "--help", "", "1 2", "abc", "-1"):
        for result in (client.requeue(bad), client.requeue(bad, hold=True), client.cancel(bad)):
            assert result.outcome is Outcome.INVALID_JOB_ID, result
            assert repr(bad) in result.message
        with pytest.raises(ValueError, match="invalid Slurm job id"):
            client.job(bad)


def test_backend_reports_the_same_job_facts_as_scontrol(client: SlurmClient) -> None:
    running = submit(SLEEP, "-J", "gw-t-facts", "--gres=gpu:2")
    held = submit(SLEEP, "-J", "gw-t-facts-held", "--hold", "--no-requeue")
    wait_state(running, "RUNNING")
    cli = CliSlurmClient(timeout_s=5.0)
    for job_id in (running, held):
        mine, theirs = client.job(job_id), cli.job(job_id)
        assert mine is not None and theirs is not None
        if isinstance(client, PyslurmClient):
            # pyslurm also knows the CPUs on each node (squeue's JSON does not)
            assert sum(mine.cpus_by_node.values()) == (mine.num_cpus if mine.nodes else 0)
            mine = dataclasses.replace(mine, cpus_by_node={})
        assert mine == theirs, (mine, theirs)
    job = client.job(running)
    assert job is not None and job.name == "gw-t-facts" and job.user == "root"
    assert len(job.gpus_by_node[job.nodes[0]]) == 2
    everyone = {j.job_id: j for j in client.jobs()}
    assert everyone[running] == job and not everyone[held].requeue


def test_array_task_is_found_by_the_id_users_see(client: SlurmClient) -> None:
    array = submit(SLEEP, "-J", "gw-t-array", "--array=0-1", "--hold")
    task = client.job(f"{array}_1")
    assert task is not None, f"{array}_1 not found"
    assert task.display_id == f"{array}_1" and task.name == "gw-t-array"
    assert task.state == "PENDING"
    assert client.requeue(f"{array}_1").outcome is Outcome.PENDING
    mine, theirs = client.job(array), CliSlurmClient(timeout_s=5.0).job(array)
    assert mine is not None and theirs is not None
    assert mine.array_task_id == theirs.array_task_id == "0-1"
    assert dataclasses.replace(mine, cpus_by_node={}) == theirs


def test_bad_job_id_is_refused_without_running_any_command(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    # bin_dir full of scripts that record being run: none may run for a bad id.
    marker = tmp_path / "ran"
    for name in ("scontrol", "scancel", "squeue"):
        script = tmp_path / name
        script.write_text(f'#!/bin/sh\necho {name} "$@" >> {marker}\nexit 1\n')
        script.chmod(0o755)
    client = CliSlurmClient(timeout_s=5.0, bin_dir=str(tmp_path))
    for bad in ("12;reboot", "--help", "", "1 2", "abc"):
        for result in (client.requeue(bad), client.requeue(bad, hold=True), client.cancel(bad)):
            assert result.outcome is Outcome.INVALID_JOB_ID, result
            assert repr(bad) in result.message
    assert not marker.exists()


def test_controller_down_is_reported_quickly_and_ping_says_unavailable(
    slurm_cluster: SlurmCluster, slurm_backend: str
) -> None:
    job_id = submit(SLEEP, "-J", "gw-t-ctlddown")
    wait_state(job_id, "RUNNING")
    client = backend_client(slurm_backend, timeout_s=2.0)
    assert client.ping().available
    with controller_stopped():
        t0 = time.monotonic()
        result = client.requeue(job_id)
        elapsed = time.monotonic() - t0
        status = client.ping()
        print(f"requeue with slurmctld down answered in {elapsed:.2f} s")
        assert result.outcome is Outcome.CONTROLLER_DOWN, result
        assert client.cancel(job_id).outcome is Outcome.CONTROLLER_DOWN
        assert not status.available and status.error
    # Back up: the job survived the controller restart and was never touched.
    assert client.ping().available
    job = client.job(job_id)
    assert job is not None and job.running and job.restart_count == 0


def test_make_slurm_client_picks_pyslurm_only_where_it_matches_the_running_slurm(
    slurm_cluster: SlurmCluster, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(make_slurm_client("cli"), CliSlurmClient)
    with pytest.raises(ValueError, match="not one of"):
        make_slurm_client("rest")
    out = subprocess.run(["scontrol", "--version"], capture_output=True, text=True, check=True)
    assert f" {slurm_cluster.version}." in out.stdout  # "slurm 25.11.7", "slurm-wlm 22.05.8"
    if slurm_cluster.version == "25.11":
        ensure_pyslurm()
        assert isinstance(make_slurm_client("auto"), PyslurmClient)
        assert isinstance(make_slurm_client("pyslurm"), PyslurmClient)
        return
    # 22.05: no pyslurm release matches it. Whether or not the 25.11 pyslurm is installed,
    # the CLI is used and the reason is logged once, however often a client is made.
    why = "does not match Slurm 22.05" if pyslurm_version() else "pyslurm is not installed"
    monkeypatch.setattr(pyslurm_module, "_logged_choices", set())  # as in a fresh process
    with caplog.at_level(logging.INFO, logger="gpuwarden.slurm.pyslurm_client"):
        assert isinstance(make_slurm_client("auto"), CliSlurmClient)
        assert isinstance(make_slurm_client("auto"), CliSlurmClient)
    said = [
        r.getMessage() for r in caplog.records if "slurm client: the Slurm CLI" in r.getMessage()
    ]
    assert len(said) == 1 and why in said[0], said
    with pytest.raises(ValueError, match=why):
        make_slurm_client("pyslurm")
