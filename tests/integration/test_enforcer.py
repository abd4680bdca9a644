"""Live enforcement in the collector, end to end without Slurm.

Agent (NvmlSampler over the fake libnvidia-ml, a static attributor) -> gRPC -> collector ->
SQLite -> Enforcer (rules + ladder) -> a recording executor and the audit log (SQLite table
read through the query path, and the JSON Lines file). Windows are shortened to seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuwarden.agent.attribution import Attribution, GpuAttribution
from gpuwarden.agent.nvml import NvmlSampler
from gpuwarden.agent.runtime import Agent
from gpuwarden.agent.spool import Spool
from gpuwarden.collector.actions import retire_dask_worker
from gpuwarden.collector.enforce import Enforcer, attach_enforcement
from gpuwarden.collector.ladder import Action, ActionOutcome, Decision
from gpuwarden.collector.policy import Policy, PolicySet
from gpuwarden.collector.server import Collector
from gpuwarden.common.types import AuditRecord, GpuSample, JobInfo, SlurmStatus
from tests.fakenvml import FakeNvmlState, default_gpu_uuid
from tests.helpers import wait_for

GPU0, GPU1, GPU2, GPU3 = (default_gpu_uuid(i) for i in range(4))
NODE = "enf01"
ACTOR = "test-enforcer"
REPORT_INTERVAL_S = 0.2
EVALUATE_INTERVAL_S = 0.3

# Seconds instead of minutes; window/max_gap matched to the 0.2 s report interval.
FAST = Policy(
    idle_window=2.0,
    grace_period=0.0,
    warnings=1,
    warn_interval=1.0,
    window=REPORT_INTERVAL_S,
    max_gap=1.0,
    action_backoff=1.0,
    action_backoff_max=2.0,
    enforce=True,
)


def batch_job(job_id: str, **kw: Any) -> JobInfo:
    """A requeue-able batch job's facts (``kw`` overrides any of them)."""
    facts: dict[str, Any] = {
        "user": "alice",
        "partition": "gpu",
        "name": f"train-{job_id}",
        "batch": True,
        "requeue": True,
        "start_time": int(time.time()) - 60,
        "source": "environ",
    }
    return JobInfo(job_id=job_id, **{**facts, **kw})


class StaticAttributor:
    """``Attributor`` for tests: fixed GPU UUID -> job facts, Slurm reported available."""

    def __init__(self, jobs: Mapping[str, JobInfo]) -> None:
        self.jobs = dict(jobs)

    def attribute(self, samples: Sequence[GpuSample]) -> Attribution:
        gpus = {
            s.uuid: GpuAttribution(job=self.jobs[s.uuid], allocated=True)
            for s in samples
            if s.uuid in self.jobs
        }
        return Attribution(gpus=gpus, slurm=SlurmStatus(available=True))


class RecordingExecutor:
    """Records every decision it is asked to carry out (from the collector's worker thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Decision] = []

    def execute(self, decision: Decision) -> ActionOutcome:
        with self._lock:
            self._calls.append(decision)
        return ActionOutcome(True, f"recorded {decision.action.value} of {decision.job_id}")

    def calls(self, job_id: str | None = None) -> list[tuple[str, Action]]:
        with self._lock:
            return [
                (d.job_id, d.action) for d in self._calls if job_id is None or d.job_id == job_id
            ]


@dataclass(slots=True)
class Rig:
    collector: Collector
    enforcer: Enforcer
    executor: RecordingExecutor
    jsonl: Path
    attributor: StaticAttributor
    spool_dir: Path
    agents: list[tuple[asyncio.Event, asyncio.Task[None]]]

    def audit(self, job_id: str) -> list[AuditRecord]:
        """The job's audit records through the query path, oldest first."""
        assert self.collector.audit is not None
        return list(reversed(self.collector.audit.query(job_id, 0.0, 1000)))

    def audit_jsonl(self, job_id: str) -> list[dict[str, Any]]:
        lines = self.jsonl.read_text().splitlines() if self.jsonl.exists() else []
        return [r for r in map(json.loads, lines) if r["job_id"] == job_id]

    def outcomes(self, job_id: str) -> list[tuple[str, str]]:
        return [(r.action, r.outcome) for r in self.audit(job_id)]

    async def evaluations_pass(self, count: int) -> None:
        """Wait until the enforcer has evaluated ``count`` more times."""
        target = self.enforcer.evaluations + count
        await wait_for(lambda: self.enforcer.evaluations >= target, timeout_s=count * 2.0 + 10)


def start_agent(rig: Rig) -> tuple[asyncio.Event, asyncio.Task[None]]:
    agent = Agent(
        node=NODE,
        sampler=NvmlSampler(),
        attributor=rig.attributor,
        spool=Spool(rig.spool_dir),
        collector=f"127.0.0.1:{rig.collector.port}",
        sample_interval_s=0.05,
        report_interval_s=REPORT_INTERVAL_S,
    )
    stop = asyncio.Event()
    handle = (stop, asyncio.create_task(agent.run(stop)))
    rig.agents.append(handle)
    return handle


async def stop_agent(handle: tuple[asyncio.Event, asyncio.Task[None]]) -> None:
    stop, task = handle
    stop.set()
    await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def rig(
    collector: Collector,
    tmp_path: Path,
    jobs: Mapping[str, JobInfo],
    policy: Policy = FAST,
    with_agent: bool = True,
) -> AsyncIterator[Rig]:
    executor = RecordingExecutor()
    jsonl = tmp_path / "audit.jsonl"
    enforcer = attach_enforcement(
        collector,
        policies=PolicySet(default=policy),
        executor=executor,
        audit_jsonl=jsonl,
        evaluate_interval_s=EVALUATE_INTERVAL_S,
        actor=ACTOR,
    )
    r = Rig(collector, enforcer, executor, jsonl, StaticAttributor(jobs), tmp_path / "spool", [])
    if with_agent:
        start_agent(r)
    try:
        yield r
    finally:
        for handle in r.agents:
            if not handle[1].done():
                await stop_agent(handle)


def assert_evidence(evidence: Mapping[str, Any], policy: Policy, uuid: str) -> None:
    (window,) = evidence["windows"]
    assert window["uuid"] == uuid and window["node"] == NODE
    assert window["covered_s"] >= policy.idle_window
    assert window["util_max_pct"] == 0.0
    assert window["windows"] >= 2
    assert evidence["finding"]["kind"] == "idle"
    assert evidence["policy"]["idle_window"] == policy.idle_window
    assert evidence["policy"]["warnings"] == policy.warnings
    assert evidence["policy"]["enforce"] is policy.enforce


async def test_idle_batch_job_is_warned_then_requeued_once_and_busy_job_is_untouched(
    collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    fake_nvml.set(GPU0, util_gpu=0).set(GPU1, util_gpu=90)
    jobs = {GPU0: batch_job("101"), GPU1: batch_job("102")}
    async with rig(collector, tmp_path, jobs) as r:
        await wait_for(lambda: r.executor.calls("101"), timeout_s=30)
        # Keep evaluating well past another warn_interval: the action is never repeated.
        await r.evaluations_pass(round(3 * FAST.warn_interval / EVALUATE_INTERVAL_S))
        assert r.executor.calls() == [("101", Action.REQUEUE)]

        records = r.audit("101")
        assert [(x.action, x.outcome) for x in records] == [("warn", "warned"), ("requeue", "done")]
        warn, done = records
        assert warn.ts < done.ts
        assert done.ts - warn.ts >= FAST.warn_interval
        assert warn.detail.startswith("warning 1 of 1: idle")
        assert done.detail == "recorded requeue of 101"
        for rec in records:
            assert rec.actor == ACTOR and not rec.dry_run and list(rec.gpus) == [GPU0]
            assert_evidence(dict(rec.evidence), FAST, GPU0)
        # The JSON Lines file holds the same decisions, each with its evidence.
        lines = r.audit_jsonl("101")
        assert [(x["action"], x["outcome"]) for x in lines] == [
            ("warn", "warned"),
            ("requeue", "done"),
        ]
        for line in lines:
            assert line["actor"] == ACTOR
            assert_evidence(line["evidence"], FAST, GPU0)

        # The busy job (util 90) never got a finding, let alone an action.
        assert r.audit("102") == [] and r.audit_jsonl("102") == []
        assert "102" in r.enforcer.jobs()  # it was evaluated all along


async def test_idle_dask_worker_is_released_and_idle_interactive_job_is_only_warned(
    collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    jobs = {
        GPU2: batch_job("103", dask_scheduler="tcp://10.0.0.5:8786", dask_worker="SLURMCluster-3"),
        GPU3: batch_job("104", batch=False, requeue=False),  # salloc / srun --pty
    }
    async with rig(collector, tmp_path, jobs) as r:
        await wait_for(lambda: r.executor.calls("103"), timeout_s=30)
        # The interactive job reaches the point where an action would be due, repeatedly.
        await wait_for(lambda: len(r.audit("104")) >= 3, timeout_s=30)

        assert r.executor.calls() == [("103", Action.RELEASE_DASK_WORKER)]
        assert r.outcomes("103") == [("warn", "warned"), ("release_dask_worker", "done")]
        first, *later = r.audit("104")
        assert (first.action, first.outcome) == ("warn", "warned")
        assert first.detail.startswith("warning 1 of 1")
        for rec in later:
            assert (rec.action, rec.outcome) == ("warn", "warned")
            assert "interactive job: never requeued" in rec.detail
            assert dict(rec.evidence)["reason"].startswith("interactive job")


async def test_job_busy_again_before_the_action_is_not_acted_on(
    collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    policy = dataclasses.replace(FAST, warn_interval=2.0)
    async with rig(collector, tmp_path, {GPU0: batch_job("105")}, policy) as r:
        await wait_for(lambda: r.outcomes("105"), timeout_s=30)
        assert r.outcomes("105") == [("warn", "warned")]
        busy_from = time.time()
        fake_nvml.set(GPU0, util_gpu=60)  # the researcher starts computing again
        # Evaluate until well after the action would have been due.
        action_due = r.audit("105")[0].ts + policy.warn_interval
        await wait_for(lambda: time.time() > action_due + 1.0, timeout_s=30)
        await r.evaluations_pass(3)
        assert r.executor.calls() == []
        assert ("requeue", "done") not in r.outcomes("105")

        # Idle again: the ladder starts from the beginning (a new streak gets a new warning).
        fake_nvml.set(GPU0, util_gpu=0)
        await wait_for(lambda: len(r.audit("105")) >= 2, timeout_s=30)
        warn1, warn2, *_ = r.audit("105")
        assert (warn2.action, warn2.outcome) == ("warn", "warned")
        assert warn2.detail.startswith("warning 1 of 1")
        since = dict(warn2.evidence)["finding"]["since_ts"]
        assert since > busy_from > dict(warn1.evidence)["finding"]["since_ts"]


async def test_dry_run_never_calls_the_executor_and_audits_what_would_happen(
    collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    policy = dataclasses.replace(FAST, enforce=False)
    jobs = {
        GPU0: batch_job("106"),
        GPU2: batch_job("107", dask_scheduler="tcp://10.0.0.5:8786", dask_worker="w-7"),
    }
    async with rig(collector, tmp_path, jobs, policy) as r:
        await wait_for(
            lambda: (
                ("requeue", "dry_run") in r.outcomes("106")
                and ("release_dask_worker", "dry_run") in r.outcomes("107")
            ),
            timeout_s=30,
        )
        await r.evaluations_pass(round(2 * policy.warn_interval / EVALUATE_INTERVAL_S))

        assert r.executor.calls() == []
        assert r.outcomes("106") == [("warn", "warned"), ("requeue", "dry_run")]
        would = r.audit("106")[-1]
        assert would.dry_run
        assert would.detail.startswith("dry run: would requeue: idle")
        evidence = dict(would.evidence)
        assert evidence["reason"] == "enforcement is off"
        assert_evidence(evidence, policy, GPU0)
        line = r.audit_jsonl("106")[-1]
        assert line["dry_run"] is True and line["detail"].startswith("dry run: would requeue")
        assert r.outcomes("107") == [("warn", "warned"), ("release_dask_worker", "dry_run")]


async def test_agent_outage_longer_than_max_gap_never_leads_to_action(
    collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    policy = dataclasses.replace(FAST, idle_window=3.0)
    async with rig(collector, tmp_path, {GPU0: batch_job("108")}, policy, with_agent=False) as r:
        # The GPU idles throughout (fake util 0); the agent reports for 1.5 s, then goes away.
        agent = start_agent(r)
        await wait_for(lambda: "108" in r.enforcer.jobs(), timeout_s=30)
        await asyncio.sleep(1.5)
        await stop_agent(agent)
        # Unreported time is unknown, never idle: however long the outage, no finding.
        await asyncio.sleep(policy.idle_window + policy.warn_interval + 2 * policy.max_gap)
        await r.evaluations_pass(3)
        assert r.audit("108") == [] and r.executor.calls() == []

        # Back: the pre-outage windows do not count; idle_window must fill up anew.
        restarted = time.time()
        agent = start_agent(r)
        await wait_for(lambda: r.audit("108"), timeout_s=30)
        warn = r.audit("108")[0]
        assert (warn.action, warn.outcome) == ("warn", "warned")
        evidence = dict(warn.evidence)
        assert evidence["finding"]["since_ts"] >= restarted - REPORT_INTERVAL_S
        assert warn.ts - restarted >= policy.idle_window
        await stop_agent(agent)


def test_retiring_a_worker_on_a_scheduler_that_does_not_answer_in_time_fails_not_hangs() -> None:
    """A real in-process Dask scheduler whose retire_workers handler answers only after
    4 s: with a 1 s timeout the executor gives a failed outcome (the ladder retries or falls
    back) instead of holding the collector's evaluation thread for as long as it takes."""
    from distributed import LocalCluster

    async def answers_late(*_args: object, **_kwargs: object) -> dict[str, object]:
        await asyncio.sleep(4.0)
        return {}

    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=1,
        processes=False,
        threads_per_worker=1,
        dashboard_address=None,
        protocol="tcp://",  # the collector contacts tcp:// schedulers only
        host="127.0.0.1",
    ) as cluster:
        (worker,) = cluster.scheduler.workers.values()
        cluster.scheduler.handlers["retire_workers"] = answers_late
        outcome = retire_dask_worker(cluster.scheduler_address, str(worker.name), timeout_s=1.0)
        assert len(cluster.scheduler.workers) == 1  # nothing was retired
    assert not outcome.ok
    assert outcome.detail == (
        f"dask scheduler {cluster.scheduler_address} did not answer within 1 s"
    )
