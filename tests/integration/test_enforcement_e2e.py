"""Enforcement end to end on the real local Slurm with dask-jobqueue.

Real parts: slurmctld/slurmd (scripts/slurm-up.sh), a ``dask_jobqueue.SLURMCluster`` whose
scheduler runs in this process and whose workers are Slurm jobs, ``SlurmAttributor`` (real
/proc, real ``scontrol``), the agent and the collector over gRPC, the collector's live rules and
ladder, and ``ClusterExecutor(CliSlurmClient())`` running ``retire_workers`` / ``scontrol
requeue``. Only the GPUs are the fake NVML library: a worker's PID is put on the fake GPU whose
index Slurm gave its job, at 0 % (idle) or 90 % (busy).

The cluster is shared with other tests: every fake GPU not under test is kept at 90 % so no
other job can look idle, and the executor is fenced to this test's own job ids.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("slurm_fixtures")
from slurm_fixtures import (  # noqa: E402
    SlurmCluster,
    cancel,
    dask_on_slurm,
    job_field,
    job_pids,
    submit,
    wait_state,
)

from gpuwarden.agent.nvml import NvmlSampler  # noqa: E402
from gpuwarden.agent.runtime import Agent  # noqa: E402
from gpuwarden.agent.slurm_attr import SlurmAttributor  # noqa: E402
from gpuwarden.agent.spool import Spool  # noqa: E402
from gpuwarden.collector.actions import ClusterExecutor  # noqa: E402
from gpuwarden.collector.corroborate import SchedulerTrust, parse_networks  # noqa: E402
from gpuwarden.collector.enforce import Enforcer, attach_enforcement  # noqa: E402
from gpuwarden.collector.ladder import Action, ActionExecutor, ActionOutcome, Decision  # noqa: E402
from gpuwarden.collector.policy import Policy, PolicySet  # noqa: E402
from gpuwarden.collector.server import Collector  # noqa: E402
from gpuwarden.common.types import AuditRecord  # noqa: E402
from gpuwarden.slurm import CliSlurmClient  # noqa: E402
from tests.fakenvml import GIB, FakeNvmlState, default_gpu_uuid  # noqa: E402

pytest_plugins = ("slurm_fixtures",)  # the slurm_cluster fixture
pytestmark = [pytest.mark.slurm, pytest.mark.dask, pytest.mark.timeout(240)]

BUSY_PCT = 90
REPORT_INTERVAL_S = 0.25
ACTOR = "gpuwarden-e2e"
POLICY = Policy(
    idle_window=3.0,
    grace_period=0.0,
    warnings=1,
    warn_interval=1.0,
    window=REPORT_INTERVAL_S,
    max_gap=1.5,
    action_backoff=2.0,
    action_backoff_max=4.0,
    enforce=True,
)


def poll(what: str, predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s (last: {value!r})")
        time.sleep(interval_s)


class OwnJobsOnly:
    """Fence around the real executor: acts only on this test's jobs (the Slurm cluster is
    shared) and records every decision it is handed."""

    def __init__(self, inner: ActionExecutor, own: set[str]) -> None:
        self.inner = inner
        self.own = own
        self._lock = threading.Lock()
        self._calls: list[tuple[str, Action, bool]] = []

    def execute(self, decision: Decision) -> ActionOutcome:
        if decision.job_id not in self.own:
            outcome = ActionOutcome(False, f"job {decision.job_id} is not this test's: refused")
        else:
            outcome = self.inner.execute(decision)
        with self._lock:
            self._calls.append((decision.job_id, decision.action, outcome.ok))
        return outcome

    def calls(self) -> list[tuple[str, Action, bool]]:
        with self._lock:
            return list(self._calls)


@dataclass
class Harness:
    """A collector with live enforcement and one agent (NvmlSampler + SlurmAttributor for this
    node), on their own event loop in a thread, so the test can make blocking Slurm and Dask
    calls."""

    node: str
    workdir: Path
    policy: Policy
    executor: ActionExecutor
    collector: Collector | None = None
    enforcer: Enforcer | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None
    _thread: threading.Thread | None = None

    @property
    def jsonl(self) -> Path:
        return self.workdir / "audit.jsonl"

    def start(self) -> Harness:
        self._thread = threading.Thread(target=self._run, name="gw-harness", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise AssertionError(f"collector/agent did not start: {self._error!r}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        collector = Collector(db_path=self.workdir / "collector.db", listen="127.0.0.1:0")
        await collector.start()
        try:
            self.enforcer = attach_enforcement(
                collector,
                policies=PolicySet(default=self.policy),
                executor=self.executor,
                audit_jsonl=self.jsonl,
                evaluate_interval_s=0.3,
                actor=ACTOR,
            )
            self.collector = collector
            agent = Agent(
                node=self.node,
                sampler=NvmlSampler(),
                attributor=SlurmAttributor(
                    self.node, cache_ttl_s=0.5, timeout_s=5.0, refresh_s=0.5
                ),
                spool=Spool(self.workdir / "spool"),
                collector=f"127.0.0.1:{collector.port}",
                sample_interval_s=0.1,
                report_interval_s=REPORT_INTERVAL_S,
            )
            task = asyncio.create_task(agent.run(self._stop))
            self._ready.set()
            await self._stop.wait()
            await asyncio.wait_for(task, 15)
        finally:
            await collector.stop()

    def stop(self) -> None:
        """Stop the agent and the collector (idempotent); re-raise what failed in the thread."""
        thread, self._thread = self._thread, None
        if thread is not None and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            thread.join(30)
            assert not thread.is_alive(), "collector/agent thread did not stop"
        if self._error is not None:
            raise self._error

    def audit(self, job_id: str) -> list[AuditRecord]:
        """The job's audit records (the collector's query path), oldest first."""
        assert self.collector is not None and self.collector.audit is not None
        return list(reversed(self.collector.audit.query(job_id, 0.0, 1000)))

    def outcomes(self, job_id: str) -> list[tuple[str, str]]:
        return [(r.action, r.outcome) for r in self.audit(job_id)]

    def audit_jsonl(self, job_id: str) -> list[dict[str, Any]]:
        lines = self.jsonl.read_text().splitlines() if self.jsonl.exists() else []
        return [r for r in map(json.loads, lines) if r["job_id"] == job_id]


def gpu_of(job_id: str, node: str) -> int:
    job = CliSlurmClient(timeout_s=10.0).job(job_id)
    assert job is not None, f"Slurm does not know job {job_id}"
    (index,) = job.gpu_indices(node)
    return index


def restarts(job_id: str) -> int | None:
    value = job_field(job_id, "Restarts")
    return None if value is None else int(value)


def assert_idle_evidence(evidence: dict[str, Any], uuid: str, node: str) -> None:
    (window,) = evidence["windows"]
    assert window["uuid"] == uuid and window["node"] == node
    assert window["covered_s"] >= POLICY.idle_window and window["util_max_pct"] == 0.0
    assert evidence["policy"]["idle_window"] == POLICY.idle_window
    assert evidence["finding"]["kind"] == "idle"


@dataclass(frozen=True, slots=True)
class Worker:
    address: str
    name: str
    pid: int
    job_id: str
    gpu: int


@pytest.fixture
def dask_workers(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[tuple[Any, list[Worker]]]:
    """A SLURMCluster (scheduler in this process) with two GPU workers, each a Slurm job."""
    with dask_on_slurm(tmp_path, name="gw-t-enf-dask", jobs=2) as client:
        facts: dict[str, tuple[int, str, str | None]] = client.run(
            lambda: (os.getpid(), os.environ["SLURM_JOB_ID"], os.environ.get("SLURM_JOB_GPUS"))
        )
        names = {a: str(w["name"]) for a, w in client.scheduler_info()["workers"].items()}
        workers = []
        for address, (pid, job_id, job_gpus) in sorted(facts.items()):
            assert job_gpus is not None and job_gpus.isdigit(), (address, job_gpus)
            assert int(job_gpus) == gpu_of(job_id, slurm_cluster.node)
            workers.append(Worker(address, names[address], pid, job_id, int(job_gpus)))
        yield client, workers


def test_idle_worker_retired_idle_job_requeued_busy_worker_kept_dry_run_changes_nothing(
    slurm_cluster: SlurmCluster,
    dask_workers: tuple[Any, list[Worker]],
    fake_nvml: FakeNvmlState,
    tmp_path: Path,
) -> None:
    client, (idle_w, busy_w) = dask_workers
    node = slurm_cluster.node
    uuid = default_gpu_uuid
    # An idle batch job: its sleep runs "on" its GPU at 0 % (attributed through /proc).
    batch = submit("sleep 600", "-J", "gw-t-enf-requeue", "--gres=gpu:1")
    harnesses: list[Harness] = []
    dry: str | None = None
    try:
        wait_state(batch, "RUNNING")
        batch_pid = job_pids(batch)[-1]
        batch_gpu = gpu_of(batch, node)
        assert restarts(batch) == 0
        assert len({idle_w.gpu, busy_w.gpu, batch_gpu}) == 3

        for i in range(4):  # whatever else runs on the shared cluster stays busy
            fake_nvml.set(uuid(i), util_gpu=BUSY_PCT)
        fake_nvml.set(uuid(idle_w.gpu), util_gpu=0).add_process(uuid(idle_w.gpu), idle_w.pid, GIB)
        fake_nvml.add_process(uuid(busy_w.gpu), busy_w.pid, 20 * GIB)
        fake_nvml.set(uuid(batch_gpu), util_gpu=0).add_process(uuid(batch_gpu), batch_pid, GIB)

        own = {idle_w.job_id, busy_w.job_id, batch}
        # the scheduler runs in this process on loopback: the site trusts that network
        trust = SchedulerTrust(networks=parse_networks(["127.0.0.0/8"]))
        executor = OwnJobsOnly(
            ClusterExecutor(CliSlurmClient(), dask_timeout_s=30.0, trust=trust), own
        )
        enforcing = Harness(node, tmp_path / "enforce", POLICY, executor).start()
        harnesses.append(enforcing)

        # The idle worker is retired through its scheduler; the idle batch job is requeued.
        poll(
            "idle worker retired",
            lambda: idle_w.address not in client.scheduler_info()["workers"],
            timeout_s=60,
        )
        poll("batch job requeued", lambda: restarts(batch) == 1, timeout_s=60)
        # From now on their GPUs count as busy, whatever job Slurm puts on them next.
        fake_nvml.set(uuid(idle_w.gpu), util_gpu=BUSY_PCT, processes=[])
        fake_nvml.set(uuid(batch_gpu), util_gpu=BUSY_PCT, processes=[])

        assert wait_state(batch, {"PENDING", "RUNNING"}) in {"PENDING", "RUNNING"}
        assert wait_state(idle_w.job_id, "COMPLETED", timeout=60) == "COMPLETED"
        # The busy worker is untouched: its job runs and it still computes.
        assert job_field(busy_w.job_id, "JobState") == "RUNNING"
        assert busy_w.address in client.scheduler_info()["workers"]
        assert client.submit(lambda: 1 + 1, workers=[busy_w.address], pure=False).result(30) == 2

        assert sorted(c for c in executor.calls() if c[0] in own) == sorted(
            [(idle_w.job_id, Action.RELEASE_DASK_WORKER, True), (batch, Action.REQUEUE, True)]
        )
        assert enforcing.outcomes(idle_w.job_id) == [
            ("warn", "warned"),
            ("release_dask_worker", "done"),
        ]
        done = enforcing.audit(idle_w.job_id)[-1]
        assert done.actor == ACTOR and not done.dry_run
        assert f"retired dask worker {idle_w.name!r}" in done.detail
        assert_idle_evidence(dict(done.evidence), uuid(idle_w.gpu), node)
        assert enforcing.outcomes(batch) == [("warn", "warned"), ("requeue", "done")]
        requeued = enforcing.audit(batch)[-1]
        assert requeued.detail.startswith("slurm: requeue")
        assert_idle_evidence(dict(requeued.evidence), uuid(batch_gpu), node)
        assert [r["outcome"] for r in enforcing.audit_jsonl(batch)] == ["warned", "done"]
        assert enforcing.audit(busy_w.job_id) == []  # never a finding for the busy worker
        assert enforcing.audit_jsonl(busy_w.job_id) == []
        enforcing.stop()
        cancel(batch)

        # Dry run: another idle batch job, allocated but with no process on its GPU.
        dry = submit("sleep 600", "-J", "gw-t-enf-dryrun", "--gres=gpu:1")
        wait_state(dry, "RUNNING")
        dry_gpu = gpu_of(dry, node)
        fake_nvml.set(uuid(dry_gpu), util_gpu=0, processes=[])
        watcher = OwnJobsOnly(ClusterExecutor(CliSlurmClient()), {dry})
        dry_policy = dataclasses.replace(POLICY, enforce=False)
        dry_run = Harness(node, tmp_path / "dry-run", dry_policy, watcher).start()
        harnesses.append(dry_run)
        poll(
            "dry-run decision",
            lambda: ("requeue", "dry_run") in dry_run.outcomes(dry),
            timeout_s=60,
        )
        would = dry_run.audit(dry)[-1]
        assert would.dry_run and would.detail.startswith("dry run: would requeue: idle")
        assert_idle_evidence(dict(would.evidence), uuid(dry_gpu), node)
        assert dry_run.audit_jsonl(dry)[-1]["detail"].startswith("dry run: would requeue")
        dry_run.stop()
        assert watcher.calls() == []
        assert job_field(dry, "JobState") == "RUNNING" and restarts(dry) == 0
        assert dry_run.audit(busy_w.job_id) == []
        assert job_field(busy_w.job_id, "JobState") == "RUNNING"
    finally:
        for h in harnesses:
            h.stop()
        cancel(batch)
        if dry is not None:
            cancel(dry)
