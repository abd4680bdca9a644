"""``PyslurmClient``: job facts, requeue, requeuehold and cancel through pyslurm's API, and
``make_slurm_client``: pyslurm where it matches the running Slurm, the CLI everywhere else.

For a Slurm whose major version is pyslurm's (pyslurm 25.11.x talks to Slurm 25.11): the
same answers as ``CliSlurmClient`` (same guards before acting, Slurm's error text mapped to
the same ``Outcome``), without starting a process per question.

pyslurm initialises libslurm at import from ``SLURM_CONF`` (or libslurm's built-in default)
and fails there when it finds no configuration. ``load_matching_pyslurm`` imports it only
after checking its installed version against the Slurm version, with the import-time
initialisation switched off, and initialises the Slurm API once per process itself.

Timeouts: libslurm's RPCs hold the GIL and wait Slurm's own ``MessageTimeout`` (10 s by
default) for a controller that is down. Every call first pings the controller (a refused
connection answers at once), so an unreachable slurmctld is reported as CONTROLLER_DOWN
without that wait; a controller that dies between the ping and the call costs up to
``MessageTimeout``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any, TypeVar

from gpuwarden.common.types import SlurmStatus
from gpuwarden.slurm.client import ActionResult, CliSlurmClient, SlurmClient, act_guarded
from gpuwarden.slurm.hostlist import expand_hostlist, parse_index_list
from gpuwarden.slurm.ids import validate_job_id
from gpuwarden.slurm.job import SlurmJob, find_job
from gpuwarden.slurm.runner import Outcome, SlurmError, SlurmRunner, classify_error

log = logging.getLogger(__name__)

__all__ = [
    "PyslurmClient",
    "PyslurmUnavailableError",
    "job_from_pyslurm",
    "load_matching_pyslurm",
    "make_slurm_client",
    "pyslurm_version",
]

_T = TypeVar("_T")
_VERSION_RE = re.compile(r"(\d+)\.(\d+)")
_init_lock = threading.Lock()
_initialised: list[str | None] = []  # the SLURM_CONF libslurm was initialised with (once)


class PyslurmUnavailableError(Exception):
    """pyslurm cannot be used here; the message says why (for the log and for errors)."""


def _major(text: str) -> tuple[int, int] | None:
    m = _VERSION_RE.search(text)
    return (int(m[1]), int(m[2])) if m else None


def pyslurm_version() -> str | None:
    """The installed pyslurm's version, read from its metadata (nothing is imported)."""
    try:
        return importlib.metadata.version("pyslurm")
    except importlib.metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def _auto_init_disabled() -> Iterator[None]:
    saved = os.environ.get("PYSLURM_DISABLE_AUTO_INIT")
    os.environ["PYSLURM_DISABLE_AUTO_INIT"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYSLURM_DISABLE_AUTO_INIT", None)
        else:
            os.environ["PYSLURM_DISABLE_AUTO_INIT"] = saved


def load_matching_pyslurm(slurm_version: str | None) -> ModuleType:
    """pyslurm, imported and initialised, when it is installed and its major version
    (``25.11``) is the one of ``slurm_version`` (e.g. ``scontrol --version``'s
    ``slurm 25.11.7``). Raises PyslurmUnavailableError saying why not. libslurm is
    initialised once per process, from ``SLURM_CONF`` when set, else its built-in default."""
    installed = pyslurm_version()
    if installed is None:
        raise PyslurmUnavailableError("pyslurm is not installed")
    want = _major(slurm_version or "")
    have = _major(installed)
    if want is None:
        raise PyslurmUnavailableError(
            f"the Slurm version is unknown ({slurm_version!r}), pyslurm {installed} not used"
        )
    if have != want:
        raise PyslurmUnavailableError(
            f"pyslurm {installed} does not match Slurm {want[0]}.{want[1]:02d} "
            f"({(slurm_version or '').strip()})"
        )
    with _init_lock:
        try:
            with _auto_init_disabled():
                module = importlib.import_module("pyslurm")
        except ImportError as e:
            raise PyslurmUnavailableError(f"pyslurm {installed} does not import: {e}") from e
        conf = os.environ.get("SLURM_CONF") or None
        if not _initialised:
            try:
                module.slurm_init(conf)
            except Exception as e:  # libslurm's own error, e.g. no configuration found
                raise PyslurmUnavailableError(f"pyslurm cannot initialise Slurm: {e}") from e
            _initialised.append(conf)
        elif _initialised[0] != conf:
            log.warning(
                "pyslurm was initialised with SLURM_CONF=%s; SLURM_CONF=%s is ignored "
                "in this process",
                _initialised[0],
                conf,
            )
    return module


# --------------------------------------------------------------------------- pyslurm -> job


def _gpu_indices(gres: Any) -> tuple[int, ...]:
    """GPU indices from pyslurm's per-node GRES dict ``{"gpu": {"count": 2, "indexes":
    "0-1"}, "gpu:a100": {...}, "shard": {...}}``: the ``gpu`` and ``gpu:TYPE`` entries."""
    out: set[int] = set()
    if not isinstance(gres, dict):
        return ()
    for name, detail in gres.items():
        if not (name == "gpu" or str(name).startswith("gpu:")) or not isinstance(detail, dict):
            continue
        indexes = detail.get("indexes")
        if isinstance(indexes, str) and indexes not in ("", "N/A"):
            out.update(parse_index_list(indexes))
    return tuple(sorted(out))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def job_from_pyslurm(job: Any) -> SlurmJob:
    """A ``pyslurm.Job`` as the SlurmJob ``squeue --json`` gives for the same job, and more:
    ``cpus_by_node`` (squeue's JSON has no per-node CPU ids). pyslurm 25.11 does not expose
    a job's SLUID (None here)."""
    state = _text(job.state).split()[0] if job.state else ""
    gpus_by_node: dict[str, tuple[int, ...]] = {}
    cpus_by_node: dict[str, int] = {}
    for node, layout in (job.get_resource_layout_per_node() or {}).items():
        gpus_by_node[str(node)] = _gpu_indices(layout.get("gres"))
        cpu_ids = layout.get("cpu_ids")
        if isinstance(cpu_ids, str) and cpu_ids:
            with contextlib.suppress(ValueError):
                cpus_by_node[str(node)] = len(parse_index_list(cpu_ids))
    start = job.start_time if state != "PENDING" else None
    end = job.end_time
    het_id = job.heterogeneous_id
    return SlurmJob(
        job_id=validate_job_id(str(job.id)),
        state=state,
        user=_text(job.user_name),
        uid=job.user_id,
        account=_text(job.account),
        partition=_text(job.partition),
        name=_text(job.name),
        qos=_text(job.qos),
        batch=bool(job.is_batch_job),
        requeue=bool(job.is_requeueable),
        restart_count=int(job.requeue_count or 0),
        start_time=int(start) if start else None,
        end_time=int(end) if end else None,
        reason=_text(job.state_reason),
        nodes=expand_hostlist(_text(job.allocated_nodes)),
        batch_host=_text(job.batch_host),
        gpus_by_node=gpus_by_node,
        cpus_by_node=cpus_by_node,
        num_cpus=job.cpus,
        array_job_id=_opt_str(job.array_id),
        # A pending array's one record names its waiting tasks ("0-7%2"), as scontrol does.
        array_task_id=_opt_str(job.array_task_id) or (_text(job.array_tasks_waiting) or None),
        het_job_id=_opt_str(het_id),
        het_job_offset=job.heterogeneous_offset if het_id else None,
    )


def _convert(records: Iterable[Any]) -> list[SlurmJob]:
    """Each record as a SlurmJob; one that cannot be read is skipped and logged, never the
    whole list."""
    out: list[SlurmJob] = []
    for record in records:
        try:
            out.append(job_from_pyslurm(record))
        except (ValueError, TypeError, AttributeError) as e:
            log.warning("pyslurm: skipped one job record (%r): %s", record, e)
    return out


# ---------------------------------------------------------------------------------- client


class PyslurmClient:
    """SlurmClient over pyslurm (see the module docstring). Build it with
    ``make_slurm_client``, which checks that pyslurm matches the Slurm it talks to."""

    def __init__(self, pyslurm: ModuleType, timeout_s: float = 10.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"PyslurmClient: timeout_s must be > 0, not {timeout_s}")
        self._ps = pyslurm
        self.timeout_s = timeout_s

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        """Run one pyslurm call; its error becomes SlurmError with Slurm's text mapped to an
        Outcome (the same table as the CLI's stderr)."""
        try:
            return fn()
        except self._ps.PyslurmError as e:
            text = str(e) or type(e).__name__
            raise SlurmError(classify_error(text), f"{what}: {text}", text) from e

    def _controller_up(self) -> None:
        """Raise SlurmError(CONTROLLER_DOWN) at once when slurmctld does not answer a ping,
        instead of letting the next RPC wait for Slurm's MessageTimeout."""
        t0 = time.monotonic()
        status = self.ping()
        if not status.available:
            raise SlurmError(Outcome.CONTROLLER_DOWN, status.error or "slurmctld is down")
        if time.monotonic() - t0 > self.timeout_s:
            raise SlurmError(
                Outcome.CONTROLLER_DOWN,
                f"slurmctld answered a ping only after {time.monotonic() - t0:.1f} s",
            )

    # ---------------------------------------------------------------------------- queries

    def ping(self) -> SlurmStatus:
        try:
            self._ps.slurmctld.ping(0)
        except self._ps.PyslurmError as e:
            return SlurmStatus(available=False, error=f"slurmctld: {e}")
        return SlurmStatus(available=True)

    def job(self, job_id: str) -> SlurmJob | None:
        validate_job_id(job_id)
        self._controller_up()
        if not job_id.isdigit():  # "123_4" / "123+1": matched by the id users see
            return find_job(self.jobs(), job_id)
        try:
            raw = self._call(f"load job {job_id}", lambda: self._ps.Job.load(int(job_id)))
        except SlurmError as e:
            if e.outcome is Outcome.UNKNOWN_JOB:
                return None
            raise
        return job_from_pyslurm(raw)

    def jobs(self) -> list[SlurmJob]:
        self._controller_up()
        loaded = self._call("load jobs", lambda: self._ps.Jobs.load())
        return _convert(loaded.values())

    def node_jobs(self, node: str) -> list[SlurmJob]:
        """The jobs allocated on ``node``: one ping and one job-info RPC (Slurm has no
        per-node job query; only this node's records are converted). For the agent."""
        self._controller_up()
        loaded = self._call("load jobs", lambda: self._ps.Jobs.load())
        return _convert(
            j for j in loaded.values() if node in expand_hostlist(_text(j.allocated_nodes))
        )

    # ---------------------------------------------------------------------------- actions

    def requeue(self, job_id: str, hold: bool = False) -> ActionResult:
        action = "requeuehold" if hold else "requeue"
        return act_guarded(
            action,
            job_id,
            self.job,
            lambda job: self._call(action, lambda: self._ps.Job(int(job.job_id)).requeue(hold)),
        )

    def cancel(self, job_id: str) -> ActionResult:
        return act_guarded(
            "cancel",
            job_id,
            self.job,
            lambda job: self._call("cancel", lambda: self._ps.Job(int(job.job_id)).cancel()),
        )


# ---------------------------------------------------------------------------------- choice

_logged_choices: set[str] = set()  # each reason for the CLI is logged once per process


def make_slurm_client(
    backend: str = "auto", timeout_s: float = 10.0, bin_dir: str | None = None
) -> SlurmClient:
    """``"cli"``: CliSlurmClient. ``"pyslurm"``: PyslurmClient, or ValueError saying why not.
    ``"auto"``: PyslurmClient when pyslurm is installed and its major version is the one of
    ``scontrol --version`` (pyslurm 25.11 for Slurm 25.11), else the CLI, logging the reason
    once per process."""
    if backend not in ("auto", "cli", "pyslurm"):
        raise ValueError(f"slurm backend {backend!r} is not one of auto, cli, pyslurm")
    if backend == "cli":
        return CliSlurmClient(timeout_s=timeout_s, bin_dir=bin_dir)
    try:
        version: str | None = SlurmRunner(timeout_s=timeout_s, bin_dir=bin_dir).output(
            "scontrol", "--version"
        )
    except SlurmError:
        version = None
    try:
        module = load_matching_pyslurm(version)
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
