"""Action executors: what the ladder's decisions do to Slurm and Dask.

Only the collector acts (agents never do), under the Slurm operator account it runs as.
Every executor returns an :class:`ActionOutcome`; failures are results, never exceptions,
so the ladder can retry and fall back and the audit log can say why.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping

from gpuwarden.collector.corroborate import (
    NOT_CORROBORATED,
    Corroborator,
    SchedulerTrust,
    SlurmUnavailable,
    Uncorroborated,
)
from gpuwarden.collector.dask_rpc import DaskRpc, DaskRpcError
from gpuwarden.collector.ladder import Action, ActionOutcome, Decision
from gpuwarden.slurm import SlurmClient

log = logging.getLogger(__name__)


def worker_processes(names: Mapping[str, str], worker_name: str) -> list[str]:
    """Addresses of the worker processes that ``worker_name`` stands for. A Slurm job of
    dask-jobqueue runs ``--name NAME --nworkers N``; with N > 1 its processes are named
    ``NAME-0`` ... ``NAME-<N-1>`` (the name the agent sees on the command line is NAME). An
    exact match wins. Otherwise the ``NAME-<digits>`` workers are taken only when they look
    like one such job: at least two, numbered 0 to N-1 without a gap, all on one host; anything
    else names nothing (a release must never reach another job's workers)."""
    exact = [a for a, n in names.items() if n == worker_name]
    if exact:
        return sorted(exact)
    prefix = worker_name + "-"
    numbered = {
        int(n[len(prefix) :]): a
        for a, n in names.items()
        if n.startswith(prefix) and n[len(prefix) :].isascii() and n[len(prefix) :].isdigit()
    }
    hosts = {_host(a) for a in numbered.values()}
    if len(numbered) < 2 or sorted(numbered) != list(range(len(numbered))) or len(hosts) != 1:
        return []
    return [numbered[i] for i in range(len(numbered))]


def _host(address: str) -> str:
    """``tcp://10.0.0.5:40123`` -> ``10.0.0.5`` (``[::1]`` forms keep their brackets)."""
    return address.split("://", 1)[-1].rsplit(":", 1)[0]


def retire_dask_worker(
    scheduler: str,
    worker_name: str,
    timeout_s: float = 30.0,
    *,
    connect_to: tuple[str, int] | None = None,
) -> ActionOutcome:
    """Retire a worker through its scheduler, gracefully: its data moves to the other
    workers and, with ``close_workers=True``, the worker processes (and so their Slurm job)
    end. Every process of a multi-process worker job goes (see ``worker_processes``).
    ``timeout_s`` bounds the connection and each call. ``connect_to``: the vetted address of
    ``scheduler`` (see ``SchedulerTrust``); without it the address is taken as written (for
    callers that chose the scheduler themselves). Nothing the scheduler sends is unpickled
    (see :mod:`dask_rpc`)."""
    if importlib.util.find_spec("msgpack") is None:
        return ActionOutcome(False, "msgpack is not installed on the collector (gpuwarden[dask])")
    if connect_to is None:
        try:
            connect_to = _host_port(scheduler)
        except ValueError as exc:
            return ActionOutcome(False, str(exc))
    try:
        with DaskRpc(*connect_to, timeout_s=timeout_s) as rpc:
            info = rpc.call("identity", n_workers=-1)
            workers = info.get("workers") if isinstance(info, dict) else None
            if not isinstance(workers, dict):
                return ActionOutcome(False, f"dask scheduler {scheduler} sent no worker list")
            names = {str(a): str(w.get("name")) for a, w in workers.items() if isinstance(w, dict)}
            addresses = worker_processes(names, worker_name)
            if not addresses:
                return ActionOutcome(
                    False, f"no worker named {worker_name!r} is connected to {scheduler}"
                )
            if len(addresses) == len(workers):
                log.info("retiring the last worker of %s (its data cannot move)", scheduler)
            retired = rpc.call("retire_workers", workers=addresses, close_workers=True)
    except TimeoutError:  # an OSError too: caught first to say what happened
        return ActionOutcome(
            False, f"dask scheduler {scheduler} did not answer within {timeout_s:g} s"
        )
    except OSError as exc:
        return ActionOutcome(False, f"dask scheduler {scheduler} unreachable: {exc}")
    except DaskRpcError as exc:
        return ActionOutcome(False, f"retire_workers on {scheduler} failed: {exc}")
    if not retired or not isinstance(retired, dict):
        return ActionOutcome(
            False, f"scheduler {scheduler} refused to retire {worker_name!r} (no result)"
        )
    if len(addresses) == 1:
        return ActionOutcome(
            True, f"retired dask worker {worker_name!r} ({addresses[0]}) via {scheduler}"
        )
    return ActionOutcome(
        True,
        f"retired dask worker {worker_name!r}: {len(addresses)} processes "
        f"({', '.join(addresses)}) via {scheduler}",
    )


def _host_port(scheduler: str) -> tuple[str, int]:
    scheme, sep, rest = scheduler.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme != "tcp" or not sep or not host or not port.isdigit():
        raise ValueError(f"dask scheduler {scheduler!r} is not tcp://HOST:PORT")
    return host.strip("[]"), int(port)


class ClusterExecutor:
    """Carries out release_dask_worker, requeue, requeuehold and cancel, each only after
    Slurm corroborated the report behind it (see :mod:`corroborate`); a Dask scheduler is
    contacted only when ``trust`` allows its address."""

    def __init__(
        self,
        slurm: SlurmClient | None,
        *,
        dask_timeout_s: float = 30.0,
        trust: SchedulerTrust | None = None,
        corroborator: Corroborator | None = None,
    ) -> None:
        self.slurm = slurm
        self.dask_timeout_s = dask_timeout_s
        self.trust = trust or SchedulerTrust()
        self.corroborator = corroborator or (Corroborator(slurm) if slurm is not None else None)

    def execute(self, decision: Decision) -> ActionOutcome:
        job = decision.allocation.job
        action = decision.action
        if action not in (
            Action.RELEASE_DASK_WORKER,
            Action.REQUEUE,
            Action.REQUEUEHOLD,
            Action.CANCEL,
        ):
            return ActionOutcome(False, f"{action.value} is not an action executors carry out")
        if self.slurm is None or self.corroborator is None:
            return ActionOutcome(False, "no Slurm client configured on the collector")
        where: tuple[str, int] | None = None
        try:
            self.corroborator.check(decision)
            if action is Action.RELEASE_DASK_WORKER:
                if not job.is_dask_worker:
                    return ActionOutcome(False, f"job {job.job_id} is not a known Dask worker")
                nodes = {g.node for g in decision.finding.gpus or decision.allocation.gpus}
                where = self.trust.vet(job.dask_scheduler, nodes)
        except Uncorroborated as exc:
            log.warning("job %s: %s %s: %s", job.job_id, action.value, NOT_CORROBORATED, exc)
            return ActionOutcome(False, f"{NOT_CORROBORATED}: {exc}")
        except SlurmUnavailable as exc:
            return ActionOutcome(False, str(exc))
        if action is Action.RELEASE_DASK_WORKER:
            return retire_dask_worker(
                job.dask_scheduler, job.dask_worker, self.dask_timeout_s, connect_to=where
            )
        if action in (Action.REQUEUE, Action.REQUEUEHOLD):
            result = self.slurm.requeue(job.job_id, hold=action is Action.REQUEUEHOLD)
        else:
            result = self.slurm.cancel(job.job_id)
        if result.ok:
            return ActionOutcome(True, f"slurm: {result.message}")
        return ActionOutcome(False, f"{result.outcome.value}: {result.message}")
