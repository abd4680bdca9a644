"""pytest fixtures and helpers for tests on the real local Slurm (scripts/slurm-up.sh).

Use from a test module::

    from slurm_fixtures import slurm_cluster, submit, wait_state, controller_stopped  # noqa: F401

``slurm_cluster`` (session) starts the cluster once, exports SLURM_CONF into os.environ and
FAILS the test (never skips) with the daemon logs' tail when Slurm cannot start. Every job
submitted through ``submit`` is cancelled at the end of the session; give jobs your own
names (other engineers share this cluster).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
STATE_DIR = Path(os.environ.get("GPUWARDEN_SLURM_STATE", REPO / ".run" / "slurm"))

_submitted: list[str] = []


@dataclass(frozen=True, slots=True)
class SlurmCluster:
    state_dir: Path
    slurm_conf: Path
    node: str  # the one node's name (hostname -s)
    gpus: int = 4


def _run_script(*args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests need root: slurm-up.sh starts munged, slurmctld and slurmd")
    proc = _run_script("slurm-up.sh", str(STATE_DIR))
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/slurm-up.sh failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    conf = STATE_DIR / "slurm.conf"
    os.environ["SLURM_CONF"] = str(conf)
    yield SlurmCluster(
        state_dir=STATE_DIR, slurm_conf=conf, node=socket.gethostname().split(".")[0]
    )
    if _submitted:
        subprocess.run(["scancel", *_submitted], capture_output=True, timeout=30, check=False)
        _submitted.clear()


@pytest.fixture(autouse=True)
def _cancel_this_tests_jobs() -> Iterator[None]:
    """Jobs a test submitted are cancelled when it ends, pass or fail, and their GPUs are
    free before the next test starts (the one node has only four)."""
    before = len(_submitted)
    yield
    mine = _submitted[before:]
    if not mine:
        return
    subprocess.run(["scancel", *mine], capture_output=True, timeout=30, check=False)
    del _submitted[before:]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = {job_field(j, "JobState") for j in mine}
        if not states & {"RUNNING", "PENDING", "COMPLETING", "CONFIGURING", "REQUEUED"}:
            return
        time.sleep(0.2)


def submit(script: str, *args: str) -> str:
    """``sbatch --parsable ARGS --wrap SCRIPT`` -> job id. The job is cancelled at session end.
    ``args`` are sbatch options (e.g. ``"-J", "gw-mytest", "--gres=gpu:1"``)."""
    proc = subprocess.run(
        ["sbatch", "--parsable", "--output=/dev/null", *args, "--wrap", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch {' '.join(args)} failed: {proc.stderr.strip()}")
    job_id = proc.stdout.strip().split(";")[0]
    _submitted.append(job_id)
    return job_id


def cancel(job_id: str) -> None:
    subprocess.run(["scancel", job_id], capture_output=True, timeout=30, check=False)


def job_field(job_id: str, key: str) -> str | None:
    """One ``Key=value`` of ``scontrol -o show job`` (None if the job is gone). JobState is
    read from ``squeue --json``: scontrol's text would take it from a job name that holds
    ``JobState=...``."""
    if key == "JobState":
        from gpuwarden.slurm import CliSlurmClient

        job = CliSlurmClient(timeout_s=30).job(job_id)
        return job.state if job is not None else None
    proc = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        return None
    for token in proc.stdout.split():
        k, sep, v = token.partition("=")
        if sep and k == key:
            return v
    return None


def wait_state(job_id: str, states: Iterable[str] | str, timeout: float = 30.0) -> str:
    """Poll until the job's JobState is one of ``states``; returns it. Raises AssertionError
    naming the last state seen when the timeout passes."""
    wanted = {states} if isinstance(states, str) else set(states)
    deadline = time.monotonic() + timeout
    state: str | None = None
    while time.monotonic() < deadline:
        state = job_field(job_id, "JobState")
        if state in wanted:
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not in {sorted(wanted)} after {timeout} s (state {state})")


def job_pids(job_id: str, timeout: float = 15.0) -> list[int]:
    """PIDs of the job's processes on this node (``scontrol listpids``), waiting until any."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = subprocess.run(
            ["scontrol", "listpids", job_id],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        pids = [
            int(ln.split()[0]) for ln in proc.stdout.splitlines()[1:] if ln.split()[:1] != ["-1"]
        ]
        pids = [p for p in pids if p > 0]
        if pids:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} has no processes after {timeout} s")


def stop_controller() -> None:
    proc = _run_script("slurm-down.sh", "--ctld-only", str(STATE_DIR), timeout_s=60)
    if proc.returncode != 0:
        raise RuntimeError(f"slurm-down.sh --ctld-only failed: {proc.stderr}")


def start_controller() -> None:
    proc = _run_script("slurm-up.sh", "--ctld-only", str(STATE_DIR), timeout_s=120)
    if proc.returncode != 0:
        raise RuntimeError(f"slurm-up.sh --ctld-only failed: {proc.stdout}{proc.stderr}")


@contextlib.contextmanager
def controller_stopped() -> Iterator[None]:
    """Stop only slurmctld (jobs and slurmd keep running) and start it again on exit."""
    stop_controller()
    try:
        yield
    finally:
        start_controller()
