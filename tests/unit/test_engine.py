"""The engine: data-time evaluation, job lifecycle, actions handed out and back."""

from __future__ import annotations

import random

from gpuwarden.collector.engine import Engine
from gpuwarden.collector.ladder import Action, ActionOutcome, LadderEvent, Status
from gpuwarden.collector.policy import Policy, PolicySet
from gpuwarden.common.types import GpuWindow, JobInfo, WindowRecord

T0 = 1_700_000_000.0
W = 60.0
POLICY = Policy(
    idle_window=600.0,
    grace_period=0.0,
    underuse_window=1800.0,
    warnings=1,
    warn_interval=300.0,
    enforce=True,
)


def job(job_id: str, start: float = T0, **kw: object) -> JobInfo:
    return JobInfo(job_id=job_id, start_time=int(start), requeue=True, **kw)  # type: ignore[arg-type]


def window(t: float, uuid: str, util: float | None, holder: JobInfo | None) -> WindowRecord:
    gpu = GpuWindow(uuid=uuid, index=0, util_max=util, util_mean=util, job=holder)
    return WindowRecord("n1", t - W, t, gpu)


def key(e: LadderEvent) -> tuple[object, ...]:
    return (e.decision.ts, e.decision.job_id, e.decision.finding.kind, e.status, e.detail)


def cluster(hours: float = 4.0, seed: int = 3) -> list[WindowRecord]:
    """Four GPUs, jobs of 20-90 min back to back: idle, low use (under-used) or busy, with
    free gaps between them (reported free, as an agent does)."""
    rng = random.Random(seed)
    out: list[WindowRecord] = []
    n = 0
    for g in range(4):
        t = T0
        while t < T0 + hours * 3600:
            n += 1
            holder = job(str(1000 + n), start=t)
            util = rng.choice([0.0, 12.0, 80.0])
            length = rng.randrange(20, 90) * W
            end = t + length
            while t < end:
                t += W
                out.append(window(t, f"GPU-{g}", util, holder))
            for _ in range(rng.randrange(0, 4)):
                t += W
                out.append(window(t, f"GPU-{g}", 0.0, None))
    out.sort(key=lambda r: (r.window_end, r.gpu.uuid))
    return out


def test_evaluate_gives_the_same_events_however_often_it_is_called() -> None:
    records = cluster()
    once = Engine(PolicySet(default=POLICY), reorder_s=W)
    for rec in records:
        once.on_window(rec)
    all_at_once = once.evaluate(records[-1].window_end + W)
    assert {e.status for e in all_at_once} >= {Status.WARNED, Status.REPORTED}

    often = Engine(PolicySet(default=POLICY), reorder_s=W)
    rng = random.Random(1)
    got: list[LadderEvent] = []
    for rec in records:
        often.on_window(rec)
        for _ in range(rng.randrange(0, 3)):  # 0, 1 or 2 calls, at any moment up to now
            got += often.evaluate(rec.window_end + rng.random() * W)
    got += often.evaluate(records[-1].window_end + W)
    assert [key(e) for e in got] == [key(e) for e in all_at_once]
    # Asking again, at the same or any later time without new data, adds nothing.
    assert often.evaluate(records[-1].window_end + W) == []
    assert often.evaluate(records[-1].window_end + 10 * 3600) == []
    # Actions decided are the same, too.
    assert [(d.job_id, d.ts) for d in often.take_actions()] == [
        (d.job_id, d.ts) for d in once.take_actions()
    ]


def test_no_event_for_a_job_after_it_has_ended() -> None:
    records = cluster(hours=6.0, seed=11)
    ends: dict[str, float] = {}
    engine = Engine(PolicySet(default=POLICY), reorder_s=W)
    events: list[LadderEvent] = []
    for rec in records:
        if rec.gpu.job is not None:
            ends[rec.gpu.job.job_id] = rec.window_end
        engine.on_window(rec)
        events += engine.evaluate(rec.window_end + W)
        # the wall clock keeps going: a job whose data stopped must stay silent
        events += engine.evaluate(rec.window_end + 5 * W)
    events += engine.evaluate(records[-1].window_end + 3600)
    assert {e.decision.finding.kind.value for e in events} >= {"idle", "underused"}
    late = [(e.decision.job_id, e.decision.ts - ends[e.decision.job_id]) for e in events]
    assert [x for x in late if x[1] > 0] == []


def test_an_underused_job_that_ended_gets_no_finding_later() -> None:
    """The defect seen live: a job reported under-used again after its end, because the
    collector kept evaluating it on the wall clock until it was forgotten."""
    policy = Policy(underuse_window=1800.0, grace_period=0.0, idle_window=3600.0)
    engine = Engine(PolicySet(default=policy), reorder_s=0.0)
    low = job("7")
    t = T0
    for _ in range(40):
        t += W
        engine.on_window(window(t, "GPU-0", 10.0, low))
    end = t
    first = engine.evaluate(end)
    assert [e.decision.finding.kind.value for e in first] == ["underused"]
    for k in range(1, 60):  # the GPU is free now; the collector keeps evaluating
        engine.on_window(window(end + k * W, "GPU-0", 0.0, None))
        assert engine.evaluate(end + k * W + 7.0) == []
        assert engine.jobs() == []  # ended by the first report of its GPU free


def test_job_ends_when_its_gpu_shows_another_job_and_a_requeued_run_starts_afresh() -> None:
    engine = Engine(PolicySet(default=POLICY), reorder_s=0.0)
    first, other = job("1"), job("2", start=T0 + 1200)
    for k in range(1, 21):
        engine.on_window(window(T0 + k * W, "GPU-0", 0.0, first))
    assert engine.evaluate(T0 + 20 * W) != []  # idle: warned
    assert engine.jobs() == ["1"]
    engine.on_window(window(T0 + 21 * W, "GPU-0", 0.0, other))
    assert engine.evaluate(T0 + 21 * W) == []
    assert engine.jobs() == ["2"]
    # job 1 again (requeued: same id, new start) is a new run with a fresh idle window
    again = job("1", start=T0 + 1300)
    engine.on_window(window(T0 + 22 * W, "GPU-1", 0.0, again))
    assert engine.evaluate(T0 + 22 * W) == []


def test_due_action_is_handed_out_once_and_its_result_comes_back_as_an_event() -> None:
    engine = Engine(PolicySet(default=POLICY), reorder_s=0.0)
    idle = job("5")
    events: list[LadderEvent] = []
    decisions = []
    for k in range(1, 40):
        engine.on_window(window(T0 + k * W, "GPU-0", 0.0, idle))
        events += engine.evaluate(T0 + k * W)
        decisions += engine.take_actions()
    assert [e.status for e in events] == [Status.WARNED]
    (decision,) = decisions  # one in flight, not one per evaluation
    assert decision.action is Action.REQUEUE
    done = engine.on_action_result(decision, ActionOutcome(True, "requeued"))
    assert (done.status, done.detail, done.decision.ts) == (Status.DONE, "requeued", decision.ts)
    for k in range(40, 60):  # acted on: not evaluated again
        engine.on_window(window(T0 + k * W, "GPU-0", 0.0, idle))
        assert engine.evaluate(T0 + k * W) == []
    assert engine.take_actions() == []


def test_a_failed_action_is_retried_after_the_backoff_counted_from_the_decision() -> None:
    engine = Engine(PolicySet(default=POLICY), reorder_s=0.0)
    idle = job("6")
    tries = []
    for k in range(1, 60):
        engine.on_window(window(T0 + k * W, "GPU-0", 0.0, idle))
        engine.evaluate(T0 + k * W)
        for d in engine.take_actions():
            tries.append(d.ts)
            failed = engine.on_action_result(d, ActionOutcome(False, "slurm down"))
            assert failed.status is Status.FAILED
    assert len(tries) == POLICY.action_retries
    assert tries[1] - tries[0] >= POLICY.action_backoff


def test_check_before_acting_sees_newer_buffered_activity() -> None:
    engine = Engine(PolicySet(default=POLICY), reorder_s=5 * W)
    idle = job("8")
    decisions = []
    for k in range(1, 30):
        engine.on_window(window(T0 + k * W, "GPU-0", 0.0, idle))
        engine.evaluate(T0 + k * W + 5 * W)
        decisions += engine.take_actions()
    (decision,) = decisions
    assert engine.still_idle(decision)
    # A newer window, not yet processed (within the reorder window), shows the GPU busy.
    engine.on_window(window(T0 + 30 * W, "GPU-0", 90.0, idle))
    assert not engine.still_idle(decision)
    aborted = engine.on_action_aborted(decision, "newest data is no longer idle")
    assert aborted.status is Status.ABORTED


def test_windows_without_slurms_facts_neither_split_the_run_nor_hide_its_facts() -> None:
    """An agent that cannot reach Slurm now and then reports the job from /proc alone (no
    start time, not requeue-able as far as it knows): still one run, acted on with the facts
    Slurm gave."""
    engine = Engine(PolicySet(default=POLICY), reorder_s=0.0)
    full = job("9")
    bare = JobInfo(job_id="9", source="environ")
    decisions = []
    events: list[LadderEvent] = []
    for k in range(1, 40):
        engine.on_window(window(T0 + k * W, "GPU-0", 0.0, bare if k % 3 else full))
        events += engine.evaluate(T0 + k * W)
        decisions += engine.take_actions()
    assert [e.detail.split(":")[0] for e in events] == ["warning 1 of 1"]
    (decision,) = decisions
    assert decision.action is Action.REQUEUE and decision.allocation.job.requeue
    assert engine.still_idle(decision)


def test_an_admin_exemption_silences_a_job_from_when_it_is_granted_until_it_ends() -> None:
    """``gpuwarden exempt`` / the dashboard's exempt: the engine asks its hook before each
    evaluation, so an exemption takes effect at once, without a restart, and ends on time."""
    granted: dict[str, float] = {}  # job -> exempt until (data time)

    def exempt(job_id: str, now: float) -> str | None:
        until = granted.get(job_id)
        return f"exempted until {until}" if until is not None and now < until else None

    engine = Engine(PolicySet(default=POLICY), reorder_s=W)
    engine.exempt = exempt
    idle, other = job("7001"), job("7002")
    granted["7001"] = T0 + 3600
    events: list[LadderEvent] = []
    for i in range(1, 121):  # two idle hours on two GPUs
        t = T0 + i * W
        engine.on_window(window(t, "GPU-0", 0.0, idle))
        engine.on_window(window(t, "GPU-1", 0.0, other))
        events += engine.evaluate(t)
    events += engine.evaluate(T0 + 122 * W)
    first_7001 = min(e.decision.ts for e in events if e.decision.job_id == "7001")
    first_7002 = min(e.decision.ts for e in events if e.decision.job_id == "7002")
    assert first_7002 < T0 + 3600 <= first_7001  # silent while exempt, found idle after


def test_an_underused_job_is_reported_once_while_it_lasts_and_again_after_an_exemption() -> None:
    """An exemption resets the job's ladder, so the same under-use, once the exemption is
    over, is reported again (here before the under-use check has run again)."""
    policy = Policy(underuse_window=1800.0, grace_period=0.0, idle_window=7200.0)
    engine = Engine(PolicySet(default=policy), reorder_s=0.0)
    engine.exempt = lambda _job, now: "exempt" if T0 + 2520 <= now < T0 + 2640 else None
    low = job("8")
    events: list[LadderEvent] = []
    for i in range(1, 61):
        t = T0 + i * W
        engine.on_window(window(t, "GPU-0", 10.0, low))
        events += engine.evaluate(t)
    assert [(e.decision.ts - T0, e.decision.finding.kind.value, e.status) for e in events] == [
        (1860, "underused", Status.REPORTED),  # under-use checked at 1860, 2160, 2460, ...
        (2640, "underused", Status.REPORTED),
    ]


def test_an_idle_job_between_warnings_is_warned_on_time_and_sees_what_changes_meanwhile() -> None:
    """Between two warnings the engine does not re-decide an idle job (nothing is due), yet
    memory held from the middle of it is reported at once, an exemption granted then
    silences the job at once, and warnings come back on time when it is over."""
    policy = Policy(
        idle_window=600.0, grace_period=0.0, warnings=9, warn_interval=300.0, mem_held_pct=50.0
    )
    engine = Engine(PolicySet(default=policy), reorder_s=0.0)
    engine.exempt = lambda _job, now: "exempt" if T0 + 1320 <= now < T0 + 1440 else None
    idle = job("9")
    events: list[LadderEvent] = []
    for i in range(1, 41):
        t = T0 + i * W
        held = t >= T0 + 720  # from the 12th minute on, 60 of 80 GiB held
        gpu = GpuWindow(
            uuid="GPU-0",
            index=0,
            util_max=0.0,
            util_mean=0.0,
            mem_used_max_bytes=(60 if held else 1) << 30,
            mem_total_bytes=80 << 30,
            job=idle,
        )
        engine.on_window(WindowRecord("n1", t - W, t, gpu))
        events += engine.evaluate(t)
    got = [(e.decision.ts - T0, e.status, e.decision.finding.code, e.detail[:12]) for e in events]
    warned, reported, held = Status.WARNED, Status.REPORTED, "memory_held_idle"
    assert got == [
        (600, warned, "", "warning 1 of"),
        (720, reported, held, "GPU memory h"),  # between warnings: at once
        (900, warned, "", "warning 2 of"),
        (1200, warned, "", "warning 3 of"),
        # exempt from 1320 to 1440, before warning 4 was due: the ladder starts afresh
        (1440, warned, "", "warning 1 of"),
        (1440, reported, held, "GPU memory h"),
        (1740, warned, "", "warning 2 of"),
        (2040, warned, "", "warning 3 of"),
        (2340, warned, "", "warning 4 of"),
    ]
