"""Action ladder: warnings, dry run, actions, reset, retries and fallback; audit records."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gpuwarden.collector.audit import AuditLog, record_from_event
from gpuwarden.collector.ladder import (
    Action,
    ActionOutcome,
    Decision,
    Ladder,
    Status,
    action_chain,
)
from gpuwarden.collector.policy import Policy
from gpuwarden.collector.rules import Allocation, Finding, FindingKind, GpuRef
from gpuwarden.common.types import JobInfo

T0 = 1_700_000_000.0
GPU = GpuRef("gpu01", "GPU-a", 0)


def alloc(**job: object) -> Allocation:
    return Allocation(JobInfo(job_id="7", start_time=int(T0), **job), (GPU,))  # type: ignore[arg-type]


def idle(since: float = T0 + 600) -> Finding:
    return Finding(FindingKind.IDLE, "7", (GPU,), since, "idle for 30m")


class Recorder:
    def __init__(self, fail: set[Action] | None = None) -> None:
        self.done: list[tuple[float, Action]] = []
        self.fail = fail or set()

    def execute(self, decision: Decision) -> ActionOutcome:
        self.done.append((decision.ts, decision.action))
        if decision.action in self.fail:
            return ActionOutcome(False, "scheduler refused")
        return ActionOutcome(True, f"{decision.action.value} ok")


class MustNotBeCalled:
    def execute(self, decision: Decision) -> ActionOutcome:
        pytest.fail(f"dry run called the executor for {decision.action}")


def run(
    ladder: Ladder,
    a: Allocation,
    policy: Policy,
    until: float,
    step: float = 60.0,
    finding: Finding | None = None,
) -> list[tuple[float, str, str]]:
    out = []
    t = T0 + 2400.0
    while t <= T0 + until:
        for e in ladder.step(t, a, [finding or idle()], policy):
            out.append((t - T0, e.status.value, e.decision.action.value))
        t += step
    return out


def test_two_warnings_fifteen_minutes_apart_then_requeue() -> None:
    rec = Recorder()
    events = run(Ladder(rec), alloc(requeue=True), Policy(enforce=True), until=9000)
    assert events == [
        (2400, "warned", "warn"),
        (3300, "warned", "warn"),
        (4200, "done", "requeue"),
    ]  # and never again for the same finding
    assert rec.done == [(T0 + 4200, Action.REQUEUE)]


def test_dry_run_never_calls_the_executor_and_records_the_would_be_action() -> None:
    events = run(Ladder(MustNotBeCalled()), alloc(requeue=True), Policy(), until=9000)
    assert events[-1] == (4200.0, "dry_run", "requeue")
    assert len(events) == 3


def test_activity_resets_the_ladder() -> None:
    ladder = Ladder(Recorder())
    a, p = alloc(requeue=True), Policy(enforce=True)
    assert ladder.step(T0 + 2400, a, [idle()], p)[0].decision.attempt == 1
    assert ladder.step(T0 + 3300, a, [idle()], p)[0].decision.attempt == 2
    assert ladder.step(T0 + 3360, a, [], p) == []  # active again
    events = ladder.step(T0 + 5400, a, [idle(since=T0 + 3600)], p)
    assert [(e.status, e.decision.attempt) for e in events] == [(Status.WARNED, 1)]


def test_requeuehold_mode_dask_release_and_cancel_choices() -> None:
    p = Policy(requeue_mode="requeuehold")
    assert action_chain(alloc(requeue=True), p) == (Action.REQUEUEHOLD,)
    dask = alloc(requeue=True, dask_scheduler="tcp://s:8786", dask_worker="w1")
    assert action_chain(dask, p) == (Action.RELEASE_DASK_WORKER, Action.REQUEUEHOLD)
    assert action_chain(alloc(requeue=False), p) == ()
    assert action_chain(alloc(requeue=False), Policy(allow_cancel=True)) == (Action.CANCEL,)


def test_interactive_jobs_are_never_requeued_and_only_warned() -> None:
    a = alloc(batch=False, requeue=True)
    assert action_chain(a, Policy(allow_cancel=True)) == ()
    events = run(Ladder(MustNotBeCalled()), a, Policy(enforce=True), until=6000)
    assert [e[:2] for e in events] == [
        (2400, "warned"),
        (3300, "warned"),
        (4200, "warned"),
        (5100, "warned"),
        (6000, "warned"),
    ]


def test_failed_action_is_retried_with_backoff_then_falls_back() -> None:
    rec = Recorder(fail={Action.RELEASE_DASK_WORKER})
    a = alloc(requeue=True, dask_scheduler="tcp://s:8786", dask_worker="w1")
    p = Policy(enforce=True, warnings=0, action_retries=3, action_backoff=60, action_backoff_max=90)
    events = run(Ladder(rec), a, p, until=3000, step=30.0)
    assert rec.done == [
        (T0 + 2400, Action.RELEASE_DASK_WORKER),
        (T0 + 2460, Action.RELEASE_DASK_WORKER),  # after 60 s
        (T0 + 2550, Action.RELEASE_DASK_WORKER),  # after 120 s capped to 90 s
        (T0 + 2580, Action.REQUEUE),  # fallback at the next evaluation
    ]
    assert [e[1] for e in events] == ["failed", "failed", "failed", "done"]


def test_every_action_failing_falls_back_to_warning() -> None:
    rec = Recorder(fail={Action.REQUEUE})
    p = Policy(enforce=True, warnings=0, action_retries=1)
    events = run(Ladder(rec), alloc(requeue=True), p, until=3400)
    assert events == [
        (2400, "failed", "requeue"),
        (2460, "warned", "warn"),
        (3360, "warned", "warn"),
    ]
    assert rec.done == [(T0 + 2400, Action.REQUEUE)]


def test_recheck_hook_stops_an_action_when_newest_data_is_busy() -> None:
    rec = Recorder()
    p = Policy(enforce=True, warnings=0)
    events = Ladder(rec).step(T0 + 2400, alloc(requeue=True), [idle()], p, lambda f: False)
    assert [e.status for e in events] == [Status.ABORTED]
    assert rec.done == []


def test_report_only_findings_are_reported_once_and_never_enforced() -> None:
    ladder = Ladder(MustNotBeCalled())
    under = Finding(FindingKind.UNDERUSED, "7", (GPU,), T0, "mean 8%")
    partly = Finding(FindingKind.PARTLY_IDLE, "7", (GPU,), T0, "partly idle")
    p = Policy(enforce=True, warnings=0)
    first = ladder.step(T0 + 4000, alloc(requeue=True), [under, partly], p)
    assert [(e.status, e.decision.action) for e in first] == [
        (Status.REPORTED, Action.NONE),
        (Status.REPORTED, Action.NONE),
    ]
    later = Finding(FindingKind.UNDERUSED, "7", (GPU,), T0 + 120, "mean 8%")
    assert ladder.step(T0 + 5000, alloc(requeue=True), [later, partly], p) == []


def test_partly_idle_is_enforced_only_when_policy_says_so() -> None:
    rec = Recorder()
    partly = Finding(FindingKind.PARTLY_IDLE, "7", (GPU,), T0, "partly idle")
    p = Policy(enforce=True, warnings=0, enforce_partly_idle=True)
    events = Ladder(rec).step(T0 + 4000, alloc(requeue=True), [partly], p)
    assert [e.status for e in events] == [Status.DONE]


def test_audit_log_writes_sqlite_and_fsynced_json_lines(tmp_path: Path) -> None:
    conn = sqlite3.connect(":memory:")
    log = AuditLog(conn, tmp_path / "audit" / "audit.jsonl")
    p = Policy()
    ladder = Ladder(MustNotBeCalled())
    a = alloc(requeue=True)
    for t in (2400, 3300, 4200):
        for e in ladder.step(T0 + t, a, [idle()], p):
            log.append(record_from_event(e, p, actor="collector@test"))
    log.close()
    rows = log.query(job_id="7")
    assert [(r.action, r.outcome, r.dry_run) for r in rows] == [
        ("requeue", "dry_run", True),
        ("warn", "warned", False),
        ("warn", "warned", False),
    ]
    assert rows[0].evidence["policy"]["idle_window"] == 1800.0
    assert rows[0].gpus == ("GPU-a",)
    assert log.query(since=T0 + 3000, limit=1)[0].ts == T0 + 4200
    assert log.query(job_id="other") == []
    lines = [json.loads(x) for x in (tmp_path / "audit" / "audit.jsonl").read_text().splitlines()]
    assert [x["outcome"] for x in lines] == ["warned", "warned", "dry_run"]
    assert lines[2]["actor"] == "collector@test"
    assert lines[2]["evidence"]["finding"]["since_ts"] == T0 + 600
