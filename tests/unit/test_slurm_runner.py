"""SlurmRunner: the one runner of Slurm commands, on real processes (small shell scripts
standing in for scontrol / scancel)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gpuwarden.slurm import Outcome, SlurmError, SlurmRunner


def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_output_returns_stdout_and_runs_argv_without_a_shell(tmp_path: Path) -> None:
    _script(tmp_path, "scontrol", 'printf "%s|" "$@"')
    runner = SlurmRunner(timeout_s=5, bin_dir=str(tmp_path))
    assert runner.output("scontrol", "show", "job", "1;reboot") == "show|job|1;reboot|"
    assert runner.calls == 1


@pytest.mark.parametrize(
    ("stderr", "outcome"),
    [
        ("slurm_load_jobs error: Unable to contact slurm controller (connect failure)", "down"),
        ("slurm_load_jobs error: Invalid job id specified", "unknown"),
        ("scancel: error: Kill job error on job id 5: Access/permission denied", "denied"),
        ("something nobody has seen", "failed"),
    ],
)
def test_failing_command_raises_with_the_outcome_its_stderr_maps_to(
    tmp_path: Path, stderr: str, outcome: str
) -> None:
    _script(tmp_path, "scontrol", f"echo '{stderr}' >&2; exit 1")
    expected = {
        "down": Outcome.CONTROLLER_DOWN,
        "unknown": Outcome.UNKNOWN_JOB,
        "denied": Outcome.ACCESS_DENIED,
        "failed": Outcome.FAILED,
    }[outcome]
    with pytest.raises(SlurmError) as err:
        SlurmRunner(timeout_s=5, bin_dir=str(tmp_path)).output("scontrol", "show", "job")
    assert err.value.outcome is expected
    assert stderr in str(err.value) and "rc=1" in str(err.value)


def test_a_hanging_command_is_cut_at_the_timeout_as_controller_down(tmp_path: Path) -> None:
    _script(tmp_path, "squeue", "exec sleep 30")
    runner = SlurmRunner(timeout_s=0.5, bin_dir=str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(SlurmError, match=r"squeue timed out after 0\.5 s") as err:
        runner.run("squeue", "--json")
    assert err.value.outcome is Outcome.CONTROLLER_DOWN
    assert time.monotonic() - t0 < 10


def test_missing_binary_and_unknown_command_are_reported(tmp_path: Path) -> None:
    runner = SlurmRunner(timeout_s=1, paths={"scontrol": str(tmp_path / "nope")})
    with pytest.raises(SlurmError, match=r"cannot run .*nope") as err:
        runner.run("scontrol", "ping")
    assert err.value.outcome is Outcome.FAILED
    with pytest.raises(ValueError, match="not a Slurm command"):
        runner.run("rm", "-rf", "/")
    with pytest.raises(ValueError, match="unknown Slurm command"):
        SlurmRunner(paths={"bash": "/bin/bash"})
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        SlurmRunner(timeout_s=0)
