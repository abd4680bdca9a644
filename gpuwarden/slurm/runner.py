"""The one way gpuwarden runs a Slurm command: an argv list (never a shell), bounded by a
timeout, with Slurm's error text mapped to an ``Outcome``.

Messages were measured on Slurm 22.05 (scontrol, squeue, scancel). Both the agent (its node's
jobs) and the collector (job facts, requeue, cancel) run their commands through
``SlurmRunner``.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import subprocess
from collections.abc import Mapping

__all__ = ["SLURM_COMMANDS", "Outcome", "SlurmError", "SlurmRunner", "classify_error", "last_line"]

log = logging.getLogger(__name__)

# The commands gpuwarden runs; a runner refuses any other name.
SLURM_COMMANDS = frozenset({"scontrol", "squeue", "scancel", "sacct", "sdiag", "sinfo"})


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


class SlurmError(Exception):
    """A Slurm command failed; ``outcome`` says why (CONTROLLER_DOWN, ACCESS_DENIED, ...)."""

    def __init__(self, outcome: Outcome, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.outcome = outcome
        self.stderr = stderr


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


def last_line(text: str) -> str:
    """The last non-blank line of ``text``, stripped ("" when none)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


class SlurmRunner:
    """Runs Slurm commands by name (``scontrol``, ``squeue``, ...).

    ``bin_dir``: folder holding the commands (default: found on ``PATH``). ``paths``: a full
    path for single commands (e.g. ``{"scontrol": "/opt/slurm/bin/scontrol"}``), taking
    precedence over ``bin_dir``. ``timeout_s`` bounds every command.
    """

    def __init__(
        self,
        timeout_s: float = 10.0,
        bin_dir: str | None = None,
        paths: Mapping[str, str] | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"SlurmRunner: timeout_s must be > 0, not {timeout_s}")
        unknown = sorted(set(paths or {}) - SLURM_COMMANDS)
        if unknown:
            raise ValueError(f"SlurmRunner: unknown Slurm command(s) {', '.join(unknown)}")
        self.timeout_s = timeout_s
        self.bin_dir = bin_dir
        self.paths = dict(paths or {})
        self.calls = 0  # commands started, for tests and benchmarks

    def path(self, command: str) -> str:
        """The executable run for ``command``."""
        if command not in SLURM_COMMANDS:
            raise ValueError(f"{command!r} is not a Slurm command gpuwarden runs")
        if command in self.paths:
            return self.paths[command]
        return os.path.join(self.bin_dir, command) if self.bin_dir else command  # noqa: PTH118

    def run(
        self, command: str, *args: str, timeout_s: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command args...`` and return it whatever its exit status. Raises
        SlurmError(CONTROLLER_DOWN) on timeout and SlurmError(FAILED) when it cannot start."""
        argv = [self.path(command), *args]
        limit = self.timeout_s if timeout_s is None else timeout_s
        self.calls += 1
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else ""
            raise SlurmError(
                Outcome.CONTROLLER_DOWN, f"{command} timed out after {limit:g} s", err
            ) from e
        except OSError as e:
            raise SlurmError(Outcome.FAILED, f"cannot run {argv[0]}: {e}") from e

    def output(self, command: str, *args: str, timeout_s: float | None = None) -> str:
        """Run ``command args...`` and return its stdout. A non-zero exit raises SlurmError
        with the outcome its stderr maps to and a message quoting its last line."""
        proc = self.run(command, *args, timeout_s=timeout_s)
        if proc.returncode != 0:
            why = last_line(proc.stderr) or last_line(proc.stdout) or "no output"
            raise SlurmError(
                classify_error(proc.stderr),
                f"{command} {' '.join(args)}: rc={proc.returncode}: {why}",
                proc.stderr,
            )
        return proc.stdout
