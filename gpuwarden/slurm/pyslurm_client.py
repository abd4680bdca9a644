"""``PyslurmClient`` and ``make_slurm_client``: pyslurm where it matches the running Slurm,
the CLI everywhere else."""

from __future__ import annotations

import logging
import re
from typing import Any

from gpuwarden.common.types import SlurmStatus
from gpuwarden.slurm.client import ActionResult, CliSlurmClient, SlurmClient
from gpuwarden.slurm.job import SlurmJob
from gpuwarden.slurm.runner import SlurmError, SlurmRunner

log = logging.getLogger(__name__)

__all__ = ["PyslurmClient", "make_slurm_client"]


class PyslurmClient:
    """SlurmClient over pyslurm, for sites whose pyslurm matches their Slurm major version.

    Thin on purpose: ``make_slurm_client`` picks it only after checking that pyslurm's version
    matches ``scontrol --version``, but every call still goes through the CLI path (same
    guards, same error mapping) because no pyslurm release builds against the Debian 22.05
    test cluster, so a pyslurm code path could not be tested here. Replace the delegations
    with pyslurm calls where a matching Slurm is available to test them.
    """

    def __init__(self, pyslurm: Any, timeout_s: float = 10.0, bin_dir: str | None = None) -> None:
        self._pyslurm = pyslurm
        self._cli = CliSlurmClient(timeout_s=timeout_s, bin_dir=bin_dir)

    def job(self, job_id: str) -> SlurmJob | None:
        return self._cli.job(job_id)

    def jobs(self) -> list[SlurmJob]:
        return self._cli.jobs()

    def requeue(self, job_id: str, hold: bool = False) -> ActionResult:
        return self._cli.requeue(job_id, hold=hold)

    def cancel(self, job_id: str) -> ActionResult:
        return self._cli.cancel(job_id)

    def ping(self) -> SlurmStatus:
        return self._cli.ping()


_VERSION_RE = re.compile(r"([0-9]+)\.([0-9]+)")


def _major(text: str) -> tuple[int, int] | None:
    m = _VERSION_RE.search(text)
    return (int(m[1]), int(m[2])) if m else None


def make_slurm_client(
    backend: str = "auto", timeout_s: float = 10.0, bin_dir: str | None = None
) -> SlurmClient:
    """``"cli"``: CliSlurmClient. ``"pyslurm"``: PyslurmClient or ValueError saying why not.
    ``"auto"``: pyslurm only when it imports and its version's major matches
    ``scontrol --version``, else the CLI."""
    if backend not in ("auto", "cli", "pyslurm"):
        raise ValueError(f"slurm backend {backend!r} is not one of auto, cli, pyslurm")
    if backend == "cli":
        return CliSlurmClient(timeout_s=timeout_s, bin_dir=bin_dir)
    why = ""
    try:
        import pyslurm  # type: ignore[import-not-found]
    except ImportError as e:
        why = f"pyslurm does not import: {e}"
        pyslurm = None
    if pyslurm is not None:
        py_ver = _major(str(getattr(pyslurm, "__version__", "")))
        try:
            cli_ver = _major(
                SlurmRunner(timeout_s=timeout_s, bin_dir=bin_dir).output("scontrol", "--version")
            )
        except SlurmError:
            cli_ver = None
        if py_ver is not None and py_ver == cli_ver:
            return PyslurmClient(pyslurm, timeout_s=timeout_s, bin_dir=bin_dir)
        why = f"pyslurm {py_ver} does not match Slurm {cli_ver}"
    if backend == "pyslurm":
        raise ValueError(f"slurm backend pyslurm unavailable: {why}")
    log.debug("slurm client: CLI (%s)", why)
    return CliSlurmClient(timeout_s=timeout_s, bin_dir=bin_dir)
