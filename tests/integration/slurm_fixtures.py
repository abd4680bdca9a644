"""pytest fixtures and helpers for tests on the real local Slurm (scripts/slurm-up.sh).

Use from a test module::

    from slurm_fixtures import slurm_cluster, submit, wait_state, controller_stopped  # noqa: F401

``slurm_cluster`` (session) is parametrized over the Slurm versions: Debian's 22.05 and
25.11 built from source (``scripts/slurm-up.sh --slurm 25.11``), so every test that takes it
runs once on each. It starts the cluster once, exports SLURM_CONF (and, for 25.11, that
build's bin/ first on PATH) into os.environ while that version's tests run, and FAILS the
test (never skips) with the daemon logs' tail when Slurm cannot start. A test that also takes
``slurm_backend`` runs with each SlurmClient backend its Slurm supports: ``cli`` on both,
``pyslurm`` on 25.11 (the pyslurm wheel is built and installed on first use).

``GPUWARDEN_SLURM_VERSIONS=22.05`` (comma-separated) limits the versions;
``GPUWARDEN_SLURM_STATE`` / ``GPUWARDEN_SLURM25_STATE`` name the state dirs of an already
running 22.05 / 25.11 cluster. Every job submitted through ``submit`` is cancelled at the end
of its version's tests; give jobs your own names (other engineers share these clusters).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
STATE_DIRS = {
    "22.05": Path(os.environ.get("GPUWARDEN_SLURM_STATE", REPO / ".run" / "slurm")),
    "25.11": Path(os.environ.get("GPUWARDEN_SLURM25_STATE", REPO / ".run" / "slurm25")),
}
STATE_DIR = STATE_DIRS["22.05"]
BACKENDS = {"22.05": ("cli",), "25.11": ("cli", "pyslurm")}  # pyslurm 25.11 needs Slurm 25.11


def _versions() -> tuple[str, ...]:
    wanted = os.environ.get("GPUWARDEN_SLURM_VERSIONS", "22.05,25.11")
    versions = tuple(v.strip() for v in wanted.split(",") if v.strip())
    unknown = [v for v in versions if v not in STATE_DIRS]
    if unknown or not versions:
        raise pytest.UsageError(
            f"GPUWARDEN_SLURM_VERSIONS={wanted!r}: expected a comma-separated subset of "
            f"{', '.join(STATE_DIRS)}"
        )
    return versions


SLURM_VERSIONS = _versions()

_submitted: list[str] = []


@dataclass(frozen=True, slots=True)
class SlurmCluster:
    state_dir: Path
    slurm_conf: Path
    node: str  # the one node's name (hostname -s)
    version: str = "22.05"  # "22.05" (Debian) or "25.11" (built from source)
    gpus: int = 4


_current: list[SlurmCluster] = []  # the cluster the running test talks to


def _run_script(*args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test taking ``slurm_cluster`` runs on each Slurm version; one also taking
    ``slurm_backend`` runs with each backend that version supports."""
    if "slurm_cluster" not in metafunc.fixturenames:
        return
    if "slurm_backend" in metafunc.fixturenames:
        combos = [(v, b) for v in SLURM_VERSIONS for b in BACKENDS[v]]
        metafunc.parametrize(
            ("slurm_cluster", "slurm_backend"),
            combos,
            indirect=True,
            ids=[f"{v}-{b}" for v, b in combos],
            scope="session",
        )
    else:
        metafunc.parametrize("slurm_cluster", SLURM_VERSIONS, indirect=True, scope="session")


def ensure_pyslurm() -> None:
    """Build (once, cached) and install pyslurm into this Python; fail the test if it cannot."""
    proc = _run_script("pyslurm-build.sh", sys.executable, timeout_s=1200)
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/pyslurm-build.sh failed (rc={proc.returncode}):\n{proc.stderr}",
            pytrace=False,
        )
    importlib.invalidate_caches()


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
    version: str = getattr(request, "param", SLURM_VERSIONS[0])
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests need root: slurm-up.sh starts munged, slurmctld and slurmd")
    state = STATE_DIRS[version]
    # A cold 25.11 build takes minutes; later runs find it cached.
    proc = _run_script("slurm-up.sh", "--slurm", version, str(state), timeout_s=1500)
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/slurm-up.sh --slurm {version} failed (rc={proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    conf = state / "slurm.conf"
    os.environ["SLURM_CONF"] = str(conf)
    if version != "22.05":
        prefix = _run_script("slurm-build.sh", "--print-prefix").stdout.strip()
        os.environ["PATH"] = f"{prefix}/bin{os.pathsep}{os.environ.get('PATH', '')}"
    cluster = SlurmCluster(
        state_dir=state, slurm_conf=conf, node=socket.gethostname().split(".")[0], version=version
    )
    _current.append(cluster)
    try:
        yield cluster
    finally:
        if _submitted:
            subprocess.run(["scancel", *_submitted], capture_output=True, timeout=30, check=False)
            _submitted.clear()
        _current.remove(cluster)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def slurm_backend(request: pytest.FixtureRequest) -> str:
    """The SlurmClient backend under test (``cli`` or ``pyslurm``), set by parametrization."""
    backend: str = getattr(request, "param", "cli")
    if backend == "pyslurm":
        ensure_pyslurm()
    return backend


def _state_dir() -> Path:
    return _current[-1].state_dir if _current else STATE_DIR


def _version() -> str:
    return _current[-1].version if _current else "22.05"


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
    proc = _run_script("slurm-down.sh", "--ctld-only", str(_state_dir()), timeout_s=60)
    if proc.returncode != 0:
        raise RuntimeError(f"slurm-down.sh --ctld-only failed: {proc.stderr}")


def start_controller() -> None:
    proc = _run_script(
        "slurm-up.sh", "--slurm", _version(), "--ctld-only", str(_state_dir()), timeout_s=120
    )
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


@contextlib.contextmanager
def dask_on_slurm(tmp_path: Path, *, name: str, jobs: int, processes: int = 1) -> Iterator[Any]:
    """A dask-jobqueue SLURMCluster (scheduler in this process) of ``jobs`` Slurm jobs with one
    GPU and ``processes`` worker processes each; yields a connected Client once every worker
    is up, and closes both (scancelling the jobs still running) at the end."""
    from dask_jobqueue import SLURMCluster  # type: ignore[attr-defined]
    from distributed import Client

    assert os.environ.get("SLURM_CONF"), "slurm_cluster exports SLURM_CONF"
    cluster = SLURMCluster(
        cores=processes,
        memory="1GB",
        processes=processes,
        queue="debug",
        walltime="00:30:00",
        job_extra_directives=["--gres=gpu:1"],
        interface="lo",
        python=sys.executable,
        job_name=name,
        log_directory=str(tmp_path / "dask-logs"),
    )
    client = Client(cluster)  # type: ignore[no-untyped-call]
    try:
        cluster.scale(jobs=jobs)  # type: ignore[no-untyped-call]
        client.wait_for_workers(jobs * processes, timeout=90)
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]
        cluster.close()
