"""Talking to Slurm from the collector: job facts, requeue, requeuehold, cancel.

``CliSlurmClient`` runs the Slurm commands (argv lists, bounded by a timeout; never a shell).
Every action first checks that the job is RUNNING: Slurm accepts ``scontrol requeue`` of a
COMPLETED or CANCELLED job and runs it again, which must never happen by our hand
(``act_guarded``, shared by every backend). Slurm's error text is mapped to an ``Outcome``
(messages measured on Slurm 22.05 and 25.11). ``make_slurm_client()`` picks ``PyslurmClient``
(``gpuwarden.collector.pyslurm_client``) when pyslurm matches the installed Slurm's version,
else the CLI.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gpuwarden.common.slurm import SlurmJob, parse_scontrol_jobs, validate_job_id
from gpuwarden.common.types import SlurmStatus

log = logging.getLogger(__name__)

__all__ = [
    "ActionResult",
    "CliSlurmClient",
    "Outcome",
    "SlurmClient",
    "SlurmError",
    "act_guarded",
    "classify_error",
    "make_slurm_client",
]


class Outcome(enum.Enum):
    DONE = "done"
    NOT_REQUEUEABLE = "not_requeueable"  # --no-requeue job (or JobRequeue=0)
    PENDING = "pending"  # the job is pending: nothing to give back
    NOT_RUNNING = "not_running"  # finished / cancelled / suspended ...: refused by us
    UNKNOWN_JOB = "unknown_job"
    ACCESS_DENIED = "access_denied"
    CONTROLLER_DOWN = "controller_down"  # slurmctld unreachable or the command timed out
    INVALID_JOB_ID = "invalid_job_id"  # refused before running any command
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ActionResult:
    job_id: str
    action: str  # requeue | requeuehold | cancel
    outcome: Outcome
    message: str  # for humans and the audit log
    stderr: str = ""  # raw stderr of the failing command, "" when none ran / it succeeded

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DONE


class SlurmError(Exception):
    """A Slurm query failed; ``outcome`` says why (CONTROLLER_DOWN, ACCESS_DENIED, ...)."""

    def __init__(self, outcome: Outcome, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.outcome = outcome
        self.stderr = stderr


class SlurmClient(Protocol):
    def job(self, job_id: str) -> SlurmJob | None:
        """The job, or None if Slurm does not know it. Raises ValueError for a malformed id
        and SlurmError when Slurm cannot be asked."""

    def jobs(self) -> list[SlurmJob]:
        """Every job Slurm shows. Raises SlurmError when Slurm cannot be asked."""

    def requeue(self, job_id: str, hold: bool = False) -> ActionResult: ...

    def cancel(self, job_id: str) -> ActionResult: ...

    def ping(self) -> SlurmStatus: ...


# Slurm's error text -> outcome, first match wins.
_ERROR_MAP: tuple[tuple[re.Pattern[str], Outcome], ...] = (
    (
        re.compile(
            r"Unable to contact slurm controller|connect failure|Socket timed out|"
            r"Zero Bytes were transmitted",
            re.I,
        ),
        Outcome.CONTROLLER_DOWN,
    ),
    (re.compile(r"Invalid job id specified|Invalid job id", re.I), Outcome.UNKNOWN_JOB),
    (re.compile(r"Requested operation is presently disabled", re.I), Outcome.NOT_REQUEUEABLE),
    (re.compile(r"Job is pending execution", re.I), Outcome.PENDING),
    (
        re.compile(
            r"Access/permission denied|Access denied|not authorized|Permission denied", re.I
        ),
        Outcome.ACCESS_DENIED,
    ),
    (
        re.compile(
            r"Job/step already completing or completed|already completed|"
            r"Job is no longer pending execution",
            re.I,
        ),
        Outcome.NOT_RUNNING,
    ),
)


def classify_error(stderr: str) -> Outcome:
    """Map Slurm's error text to an Outcome (FAILED when nothing matches)."""
    for pattern, outcome in _ERROR_MAP:
        if pattern.search(stderr):
            return outcome
    return Outcome.FAILED


class CliSlurmClient:
    """SlurmClient over scontrol / squeue / scancel (Slurm's CLI: works with any version)."""

    def __init__(self, timeout_s: float = 10.0, bin_dir: str | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"CliSlurmClient: timeout_s must be > 0, not {timeout_s}")
        self.timeout_s = timeout_s
        self.bin_dir = bin_dir

    def _bin(self, name: str) -> str:
        return os.path.join(self.bin_dir, name) if self.bin_dir else name  # noqa: PTH118

    def _run(self, *argv: str, timeout_s: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run one Slurm command. Raises SlurmError(CONTROLLER_DOWN) on timeout and
        SlurmError(FAILED) when the binary cannot run."""
        cmd = [self._bin(argv[0]), *argv[1:]]
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else ""
            raise SlurmError(
                Outcome.CONTROLLER_DOWN, f"{argv[0]} timed out after {limit:g} s", err
            ) from e
        except OSError as e:
            raise SlurmError(Outcome.FAILED, f"cannot run {cmd[0]}: {e}") from e

    # ---------------------------------------------------------------------------- queries

    def job(self, job_id: str) -> SlurmJob | None:
        validate_job_id(job_id)
        proc = self._run("scontrol", "-d", "-o", "show", "job", job_id)
        if proc.returncode != 0:
            outcome = classify_error(proc.stderr)
            if outcome is Outcome.UNKNOWN_JOB:
                return None
            raise SlurmError(
                outcome, f"scontrol show job {job_id}: {_last(proc.stderr)}", proc.stderr
            )
        jobs = parse_scontrol_jobs(proc.stdout)
        for job in jobs:  # "123_4" shows that task; "123" of an array shows every task
            if job.job_id == job_id or job.display_id == job_id:
                return job
        return jobs[0] if len(jobs) == 1 else None

    def jobs(self) -> list[SlurmJob]:
        proc = self._run("scontrol", "-d", "-o", "show", "job")
        if proc.returncode != 0:
            raise SlurmError(
                classify_error(proc.stderr), f"scontrol show job: {_last(proc.stderr)}", proc.stderr
            )
        return parse_scontrol_jobs(proc.stdout)

    def ping(self) -> SlurmStatus:
        try:
            proc = self._run("scontrol", "ping")
        except SlurmError as e:
            return SlurmStatus(available=False, error=str(e))
        text = (proc.stdout + proc.stderr).strip()
        if proc.returncode == 0 and " is UP" in text:
            return SlurmStatus(available=True)
        first = next((ln for ln in text.splitlines() if "Slurmctld" in ln), _last(text))
        return SlurmStatus(available=False, error=first or f"scontrol ping rc={proc.returncode}")

    # ---------------------------------------------------------------------------- actions

    def requeue(self, job_id: str, hold: bool = False) -> ActionResult:
        action = "requeuehold" if hold else "requeue"
        return self._act(action, job_id, ("scontrol", action, job_id))

    def cancel(self, job_id: str) -> ActionResult:
        return self._act("cancel", job_id, ("scancel", job_id))

    def _act(self, action: str, job_id: str, argv: tuple[str, ...]) -> ActionResult:
        def perform(job: SlurmJob) -> None:
            proc = self._run(*argv)
            if proc.returncode == 0:
                return
            outcome = classify_error(proc.stderr)
            if outcome is Outcome.FAILED and "Unexpected message received" in proc.stderr:
                # 22.05 scontrol requeue prints this when the controller went away meanwhile.
                outcome = Outcome.CONTROLLER_DOWN if not self.ping().available else Outcome.FAILED
            raise SlurmError(outcome, _last(proc.stderr), proc.stderr)

        return act_guarded(action, job_id, self.job, perform)


def act_guarded(
    action: str,
    job_id: str,
    lookup: Callable[[str], SlurmJob | None],
    perform: Callable[[SlurmJob], object],
) -> ActionResult:
    """The one path of every Slurm action, whatever the backend: refuse a malformed id, look
    the job up, act only on a RUNNING job (Slurm requeues finished jobs and runs them again)
    that is requeue-able when requeuing, then ``perform(job)``, which raises SlurmError when
    Slurm refuses."""
    try:
        validate_job_id(job_id)
    except ValueError as e:
        return ActionResult(job_id, action, Outcome.INVALID_JOB_ID, str(e))
    try:
        job = lookup(job_id)
    except SlurmError as e:
        return ActionResult(job_id, action, e.outcome, f"{action} {job_id}: {e}", e.stderr)
    if job is None:
        return ActionResult(
            job_id, action, Outcome.UNKNOWN_JOB, f"job {job_id} is unknown to Slurm"
        )
    if job.state == "PENDING":
        return ActionResult(
            job_id, action, Outcome.PENDING, f"job {job_id} is pending: not {action}d"
        )
    if job.state != "RUNNING":
        return ActionResult(
            job_id,
            action,
            Outcome.NOT_RUNNING,
            f"job {job_id} is {job.state}, not RUNNING: refused",
        )
    if action != "cancel" and not job.requeue:
        return ActionResult(
            job_id, action, Outcome.NOT_REQUEUEABLE, f"job {job_id} is not requeue-able (Requeue=0)"
        )
    t0 = time.monotonic()
    try:
        perform(job)
    except SlurmError as e:
        return ActionResult(job_id, action, e.outcome, f"{action} {job_id}: {e}", e.stderr)
    log.info("slurm %s %s done in %.2f s", action, job_id, time.monotonic() - t0)
    return ActionResult(job_id, action, Outcome.DONE, f"{action} {job_id}: done")


def _last(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


# ------------------------------------------------------------------------------------ choice

_VERSION_RE = re.compile(r"(\d+)\.(\d+)")
_logged_choices: set[str] = set()  # each reason for the CLI is logged once per process


def _major(text: str) -> tuple[int, int] | None:
    m = _VERSION_RE.search(text)
    return (int(m[1]), int(m[2])) if m else None


def _slurm_version(bin_dir: str | None, timeout_s: float) -> str | None:
    """``scontrol --version`` (e.g. ``slurm 25.11.7``), or None when it cannot run."""
    scontrol = os.path.join(bin_dir, "scontrol") if bin_dir else shutil.which("scontrol")  # noqa: PTH118
    if not scontrol:
        return None
    try:
        out = subprocess.run(
            [scontrol, "--version"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def make_slurm_client(
    backend: str = "auto", timeout_s: float = 10.0, bin_dir: str | None = None
) -> SlurmClient:
    """``"cli"``: CliSlurmClient. ``"pyslurm"``: PyslurmClient, or ValueError saying why not.
    ``"auto"``: PyslurmClient when pyslurm is installed and its major version is the one of
    ``scontrol --version`` (pyslurm 25.11 for Slurm 25.11), else the CLI, logging the reason
    once."""
    if backend not in ("auto", "cli", "pyslurm"):
        raise ValueError(f"slurm backend {backend!r} is not one of auto, cli, pyslurm")
    if backend == "cli":
        return CliSlurmClient(timeout_s=timeout_s, bin_dir=bin_dir)
    # Imported here: pyslurm_client imports this module.
    from gpuwarden.collector.pyslurm_client import (
        PyslurmClient,
        PyslurmUnavailableError,
        load_matching_pyslurm,
    )

    try:
        module = load_matching_pyslurm(_slurm_version(bin_dir, timeout_s))
    except PyslurmUnavailableError as e:
        if backend == "pyslurm":
            raise ValueError(f"slurm backend pyslurm unavailable: {e}") from e
        why = str(e)
        if why not in _logged_choices:
            _logged_choices.add(why)
            log.log(
                logging.INFO if why == "pyslurm is not installed" else logging.WARNING,
                "slurm client: the Slurm CLI (%s)",
                why,
            )
        return CliSlurmClient(timeout_s=timeout_s, bin_dir=bin_dir)
    return PyslurmClient(module, timeout_s=timeout_s)
