"""CliSlurmClient against the real local Slurm: requeue, requeuehold, cancel and their refusals."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("slurm_fixtures")
from slurm_fixtures import SlurmCluster, controller_stopped, job_field, submit, wait_state  # noqa: E402

from gpuwarden.slurm import CliSlurmClient, Outcome, make_slurm_client  # noqa: E402

pytest_plugins = ("slurm_fixtures",)  # the slurm_cluster fixture
pytestmark = pytest.mark.slurm

SLEEP = "sleep 600"


@pytest.fixture
def client(slurm_cluster: SlurmCluster) -> CliSlurmClient:
    return CliSlurmClient(timeout_s=5.0)


def test_requeue_returns_running_job_to_pending_and_it_runs_again_with_one_more_restart(
    client: CliSlurmClient,
) -> None:
    job_id = submit(SLEEP, "-J", "gw-t-requeue")
    wait_state(job_id, "RUNNING")
    result = client.requeue(job_id)
    assert result.outcome is Outcome.DONE, result
    assert wait_state(job_id, {"PENDING", "REQUEUED"}, timeout=5) in {"PENDING", "REQUEUED"}
    wait_state(job_id, "RUNNING", timeout=30)  # cred_expire=5: back in ~5-6 s
    job = client.job(job_id)
    assert job is not None and job.restart_count == 1 and job.running


def test_requeuehold_leaves_the_job_pending_and_held(client: CliSlurmClient) -> None:
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


def test_no_requeue_job_is_refused_and_keeps_running(client: CliSlurmClient) -> None:
    job_id = submit(SLEEP, "-J", "gw-t-norequeue", "--no-requeue")
    wait_state(job_id, "RUNNING")
    result = client.requeue(job_id)
    assert result.outcome is Outcome.NOT_REQUEUEABLE, result
    job = client.job(job_id)
    assert job is not None and job.running and job.restart_count == 0


def test_cancel_ends_a_running_job(client: CliSlurmClient) -> None:
    job_id = submit(SLEEP, "-J", "gw-t-cancel")
    wait_state(job_id, "RUNNING")
    result = client.cancel(job_id)
    assert result.outcome is Outcome.DONE, result
    assert wait_state(job_id, "CANCELLED", timeout=10) == "CANCELLED"


def test_finished_job_is_refused_and_not_run_again(client: CliSlurmClient) -> None:
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


def test_pending_job_is_refused_as_pending(client: CliSlurmClient) -> None:
    job_id = submit(SLEEP, "-J", "gw-t-pending", "--hold")
    wait_state(job_id, "PENDING")
    assert client.requeue(job_id).outcome is Outcome.PENDING
    assert client.cancel(job_id).outcome is Outcome.PENDING


def test_unknown_job_id(client: CliSlurmClient) -> None:
    assert client.job("999999") is None
    result = client.requeue("999999")
    assert result.outcome is Outcome.UNKNOWN_JOB, result
    assert client.cancel("999998").outcome is Outcome.UNKNOWN_JOB


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
    slurm_cluster: SlurmCluster,
) -> None:
    job_id = submit(SLEEP, "-J", "gw-t-ctlddown")
    wait_state(job_id, "RUNNING")
    client = CliSlurmClient(timeout_s=2.0)
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


def test_make_slurm_client_falls_back_to_the_cli_without_a_matching_pyslurm(
    slurm_cluster: SlurmCluster,
) -> None:
    assert isinstance(make_slurm_client("auto"), CliSlurmClient)
    assert isinstance(make_slurm_client("cli"), CliSlurmClient)
    with pytest.raises(ValueError, match="pyslurm"):
        make_slurm_client("pyslurm")
    with pytest.raises(ValueError, match="not one of"):
        make_slurm_client("rest")
    # the version the CLI reports, which a pyslurm would have to match
    out = subprocess.run(["scontrol", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("slurm")
