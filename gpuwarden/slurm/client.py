"""Asking Slurm about jobs and acting on them: ``SlurmClient`` and its CLI implementation.

Every action first checks that the job is RUNNING: Slurm accepts ``scontrol requeue`` of a
COMPLETED or CANCELLED job and runs it again, which must never happen by our hand
(``act_guarded``, the one guard, also used by the pyslurm backend). Job facts
come from ``squeue --json`` (structured: a job named ``x JobState=RUNNING Requeue=1`` cannot
pass that guard, as it could through scontrol's unescaped text).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gpuwarden.common.types import SlurmStatus
from gpuwarden.slurm.ids import validate_job_id
from gpuwarden.slurm.job import SlurmJob, find_job
from gpuwarden.slurm.runner import Outcome, SlurmError, SlurmRunner, classify_error, last_line
from gpuwarden.slurm.squeue import parse_squeue_json

log = logging.getLogger(__name__)

__all__ = ["ActionResult", "CliSlurmClient", "SlurmClient", "act_guarded"]


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


class SlurmClient(Protocol):
    def job(self, job_id: str) -> SlurmJob | None:
        """The job, or None if Slurm does not know it. Raises ValueError for a malformed id
        and SlurmError when Slurm cannot be asked."""

    def jobs(self) -> list[SlurmJob]:
        """Every job Slurm shows. Raises SlurmError when Slurm cannot be asked."""

    def requeue(self, job_id: str, hold: bool = False) -> ActionResult: ...

    def cancel(self, job_id: str) -> ActionResult: ...

    def ping(self) -> SlurmStatus: ...


class CliSlurmClient:
    """SlurmClient over squeue / scontrol / scancel (Slurm's CLI: works with any version)."""

    def __init__(
        self,
        timeout_s: float = 10.0,
        bin_dir: str | None = None,
        runner: SlurmRunner | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"CliSlurmClient: timeout_s must be > 0, not {timeout_s}")
        self.runner = runner or SlurmRunner(timeout_s=timeout_s, bin_dir=bin_dir)

    # ---------------------------------------------------------------------------- queries

    def job(self, job_id: str) -> SlurmJob | None:
        validate_job_id(job_id)
        # 22.05 ignores -j and --states with --json (and answers with every job); later
        # versions filter. Either way the answer is filtered here.
        try:
            text = self.runner.output("squeue", "--json", "--states=all", "-j", job_id)
        except SlurmError as e:
            if e.outcome is Outcome.UNKNOWN_JOB:
                return None
            raise
        return find_job(parse_squeue_json(text), job_id)

    def jobs(self) -> list[SlurmJob]:
        return parse_squeue_json(self.runner.output("squeue", "--json", "--states=all"))

    def ping(self) -> SlurmStatus:
        try:
            proc = self.runner.run("scontrol", "ping")
        except SlurmError as e:
            return SlurmStatus(available=False, error=str(e))
        text = (proc.stdout + proc.stderr).strip()
        if proc.returncode == 0 and " is UP" in text:
            return SlurmStatus(available=True)
        first = next((ln for ln in text.splitlines() if "Slurmctld" in ln), last_line(text))
        return SlurmStatus(available=False, error=first or f"scontrol ping rc={proc.returncode}")

    # ---------------------------------------------------------------------------- actions

    def requeue(self, job_id: str, hold: bool = False) -> ActionResult:
        action = "requeuehold" if hold else "requeue"
        return self._act(action, job_id, ("scontrol", action, job_id))

    def cancel(self, job_id: str) -> ActionResult:
        return self._act("cancel", job_id, ("scancel", job_id))

    def _act(self, action: str, job_id: str, argv: tuple[str, ...]) -> ActionResult:
        def perform(job: SlurmJob) -> None:
            proc = self.runner.run(*argv)
            if proc.returncode == 0:
                return
            outcome = classify_error(proc.stderr)
            if outcome is Outcome.FAILED and "Unexpected message received" in proc.stderr:
                # 22.05 scontrol requeue prints this when the controller went away meanwhile.
                outcome = Outcome.CONTROLLER_DOWN if not self.ping().available else Outcome.FAILED
            raise SlurmError(outcome, last_line(proc.stderr), proc.stderr)

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
