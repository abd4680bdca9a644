"""Safety properties of rules + ladder on arbitrary traces (hypothesis)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuwarden.collector.ladder import ENFORCING, ActionOutcome, Decision, Ladder, Status
from gpuwarden.collector.policy import Policy
from gpuwarden.collector.rules import Allocation, AllocationTracker, GpuRef
from gpuwarden.common.types import JobInfo

T0 = 1_700_000_000.0
W = 60.0
GPUS = (GpuRef("n1", "GPU-0", 0), GpuRef("n1", "GPU-1", 1))

# one step of a trace: advance by n windows, each GPU either reports util u or nothing (None)
step = st.tuples(
    st.integers(min_value=1, max_value=4),
    st.one_of(st.none(), st.sampled_from([0.0, 1.0, 4.9, 5.0, 30.0, 100.0])),
    st.one_of(st.none(), st.sampled_from([0.0, 2.0, 5.0, 80.0])),
)
policies = st.builds(
    Policy,
    idle_window=st.sampled_from([300.0, 600.0, 900.0]),
    grace_period=st.sampled_from([0.0, 120.0]),
    warnings=st.integers(min_value=0, max_value=2),
    warn_interval=st.sampled_from([0.0, 60.0, 300.0]),
    max_gap=st.sampled_from([0.0, 60.0, 120.0]),
    enforce=st.just(True),
    allow_cancel=st.booleans(),
)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Decision] = []

    def execute(self, decision: Decision) -> ActionOutcome:
        self.calls.append(decision)
        return ActionOutcome(True)


class MustNotBeCalled:
    def execute(self, decision: Decision) -> ActionOutcome:
        pytest.fail(f"dry run called the executor for {decision.action}")


def simulate(
    steps: list[tuple[int, float | None, float | None]], policy: Policy, ladder: Ladder
) -> tuple[list[tuple[float, Status]], list[tuple[int, float, float]]]:
    job = JobInfo(job_id="1", start_time=int(T0), requeue=True)
    alloc = Allocation(job, GPUS)
    tracker = AllocationTracker(alloc, policy)
    windows: list[tuple[int, float, float]] = []  # (gpu, end, util)
    events: list[tuple[float, Status]] = []
    t = T0
    for n, u0, u1 in steps:
        t += n * W
        for pos, u in ((0, u0), (1, u1)):
            if u is not None:
                tracker.add_values(pos, t, W, u)
                windows.append((pos, t, u))
        found = tracker.evaluate(t)
        for e in ladder.step(t, alloc, found, policy, lambda _f, now=t: tracker.still_idle(now)):
            events.append((t, e.status))
    return events, windows


def covered_idle_after_last_activity(
    windows: list[tuple[int, float, float]], gpu: int, now: float, policy: Policy
) -> float:
    """Independent oracle: reported idle time of ``gpu`` after its last active window."""
    mine = [(end, u) for g, end, u in windows if g == gpu and end <= now]
    last_active = max((end for end, u in mine if u >= policy.active_util_pct), default=None)
    floor = T0 + policy.grace_period
    if last_active is not None:
        floor = max(floor, last_active)
    return float(sum(max(0.0, end - max(end - W, floor)) for end, u in mine if end > floor))


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=80), policy=policies)
def test_no_action_with_activity_in_the_idle_window_or_without_covered_idle_time(
    steps: list[tuple[int, float | None, float | None]], policy: Policy
) -> None:
    rec = Recorder()
    _events, windows = simulate(steps, policy, Ladder(rec))
    for d in rec.calls:
        now = d.ts
        recent_active = [
            end
            for _, end, u in windows
            if u >= policy.active_util_pct and end > now - policy.idle_window and end <= now
        ]
        assert recent_active == [], "acted on an allocation active in the last idle_window"
        for gpu in (0, 1):
            assert covered_idle_after_last_activity(windows, gpu, now, policy) >= (
                policy.idle_window
            ), "acted before idle_window was covered by reports"
    assert len(rec.calls) <= 1 or len({d.finding.since_ts for d in rec.calls}) == len(rec.calls)


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(step, max_size=40),
    extra=st.integers(min_value=0, max_value=5),
    after=st.lists(step, max_size=20),
    policy=policies,
)
def test_dry_run_never_calls_the_executor(
    before: list[tuple[int, float | None, float | None]],
    extra: int,
    after: list[tuple[int, float | None, float | None]],
    policy: Policy,
) -> None:
    """Every generated run reaches the action step: whatever comes before, both GPUs then
    idle long enough for the idle window, every warning and the action to fall due."""
    dry = dataclasses.replace(policy, enforce=False)
    due_s = dry.grace_period + dry.idle_window + (dry.warnings + 1) * max(dry.warn_interval, W)
    idle_long_enough = [(1, 0.0, 0.0)] * (math.ceil(due_s / W) + 2 + extra)
    events, _ = simulate(before + idle_long_enough + after, dry, Ladder(MustNotBeCalled()))
    statuses = [s for _, s in events]
    assert Status.DRY_RUN in statuses  # the action step was reached ...
    assert Status.DONE not in statuses  # ... and nothing was done


@settings(max_examples=200, deadline=None)
@given(n_reports=st.integers(min_value=0, max_value=200), gap_every=st.integers(2, 6))
def test_a_trace_with_long_gaps_never_acts(n_reports: int, gap_every: int) -> None:
    """Idle reports separated by outages longer than max_gap never add up to an action."""
    policy = Policy(idle_window=600.0, grace_period=0.0, warnings=0, enforce=True, max_gap=120.0)
    rec = Recorder()
    steps: list[tuple[int, float | None, float | None]] = []
    for i in range(n_reports):
        # a few idle windows, then an outage of 3 windows (180 s > max_gap)
        steps.append((4 if i % gap_every == 0 else 1, 0.0, 0.0))
    assert gap_every * W < policy.idle_window  # no stretch between outages is long enough
    events, _ = simulate(steps, policy, Ladder(rec))
    assert [d for d in rec.calls if d.action in ENFORCING] == []
    assert events == []
