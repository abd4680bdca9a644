"""The action ladder: findings -> warnings -> (when enforcement is on) actions.

One implementation serves the live collector and ``gpuwarden replay``. The :class:`Ladder`
decides; an :class:`ActionExecutor` carries out enforcing actions (Dask release, requeue,
cancel). Warnings and reports are returned as events for the caller to deliver as alerts:
they never go through the executor. In dry-run (``enforce = false``) the executor is never
called; the would-be action is recorded as a ``dry_run`` event.

For an idle finding (and a partly-idle one when ``enforce_partly_idle``), per job:
``warnings`` warnings ``warn_interval`` apart; ``warn_interval`` after the last one, the first
action the job allows (see :func:`action_chain`). A failed action is retried after
``action_backoff`` (doubling, capped at ``action_backoff_max``); after ``action_retries``
failed attempts the ladder falls back to the next action of the chain, and when none is left
it keeps warning every ``warn_interval``. Right before an action, ``still_idle`` (a hook the
caller passes) re-checks the newest data; if it is no longer idle nothing is done.
A finding that disappears (the allocation became active, or its data went missing) resets its
ladder; an action is never taken twice for the same idle streak. Report-only findings
(under-used, advice, partly idle) give one ``reported`` event each time they appear.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gpuwarden.collector.decisions import (
    ENFORCING,
    Action,
    ActionExecutor,
    ActionOutcome,
    Decision,
    LadderEvent,
    Status,
)
from gpuwarden.collector.policy import Policy
from gpuwarden.collector.rules import Allocation, Finding, FindingKind, PendingFinding

__all__ = [
    "ENFORCING",
    "NOT_IDLE_ANYMORE",
    "Action",
    "ActionExecutor",
    "ActionOutcome",
    "Decision",
    "Ladder",
    "LadderEvent",
    "Status",
    "action_chain",
]

log = logging.getLogger(__name__)


NOT_IDLE_ANYMORE = "newest data is no longer idle: not acting"


def action_chain(allocation: Allocation, policy: Policy) -> tuple[Action, ...]:
    """The enforcing actions a job allows, in order of preference (empty: warn only)."""
    job = allocation.job
    chain: list[Action] = []
    if job.is_dask_worker and policy.dask_release:
        chain.append(Action.RELEASE_DASK_WORKER)
    if job.batch and job.requeue:  # interactive jobs are never requeued
        chain.append(Action(policy.requeue_mode))
    if policy.allow_cancel and (job.batch or policy.cancel_interactive):
        chain.append(Action.CANCEL)
    return tuple(chain)


def _why_no_action(allocation: Allocation, policy: Policy) -> str:
    job = allocation.job
    if not job.batch:
        return "interactive job: never requeued, and cancel is not allowed for it"
    if not job.requeue:
        return "job is not requeue-able and allow_cancel is off"
    return "no action allowed by policy"


class _State:
    __slots__ = (
        "failures",
        "in_flight",
        "last_warn_ts",
        "next_try_ts",
        "pos",
        "since",
        "warnings_sent",
    )

    def __init__(self, since: float) -> None:
        self.since = since
        self.warnings_sent = 0
        self.last_warn_ts: float | None = None
        self.pos = 0
        self.failures = 0
        self.next_try_ts: float | None = None
        self.in_flight: Decision | None = None


class Ladder:
    """Per-job ladder state. Call :meth:`step` after every evaluation of an allocation.

    With an ``executor``, a due action is carried out inside :meth:`step` (replay, tests).
    Without one, it is queued: :meth:`take_pending` hands it to the caller, who runs it
    elsewhere and reports back with :meth:`on_result` or :meth:`on_aborted`; until then the
    finding waits (at most one action in flight per finding).
    """

    def __init__(self, executor: ActionExecutor | None = None) -> None:
        self._executor = executor
        self._states: dict[str, dict[tuple[str, str], _State]] = {}
        self._finished: dict[str, set[tuple[tuple[str, str], float]]] = {}
        self._pending: list[Decision] = []
        self._changed: set[str] = set()  # jobs whose state changed since take_changed()
        # Counts the changes of state made outside step() (action results, restore): a
        # quiet_until() answer holds only while it is unchanged.
        self.revision = 0

    def has_state(self, job_id: str) -> bool:
        """Whether the job has ladder state: a step without findings changes nothing (and
        need not be taken) when it has none."""
        return bool(self._states.get(job_id))

    def quiet_until(self, job_id: str, policy: Policy) -> float:
        """Asked right after a :meth:`step`: until the time returned, another step of the job
        with findings of the same keys and starts, under the same ``policy`` and the same
        :attr:`revision`, emits nothing and changes nothing (-inf: no such time). Each of
        its findings is then report-only and reported, finished, or not due for its next
        warning or action; anything else (an action in flight, a retry waiting) gives -inf."""
        states = self._states.get(job_id)
        if not states:
            return -math.inf
        finished = self._finished.get(job_id) or ()
        until = math.inf
        for key, st in states.items():
            if st.pos < 0 or (key, st.since) in finished:
                continue
            last = st.last_warn_ts
            if last is None:
                return -math.inf
            due = last + policy.warn_interval
            # a few units in the last place early, so that ``now < until`` implies the
            # step's own test (``now - last < warn_interval``) whatever the rounding
            due -= 4 * math.ulp(max(abs(due), abs(last), abs(policy.warn_interval)))
            if due < until:
                until = due
        return until

    def forget(self, job_id: str) -> None:
        """Drop all state of a job that has ended."""
        had_state = self._states.pop(job_id, None) is not None
        if self._finished.pop(job_id, None) is not None or had_state:
            self._changed.add(job_id)

    # -- persistence (the collector keeps the ladder across restarts) ---------------------
    def take_changed(self) -> dict[str, dict[str, Any] | None]:
        """The state of every job changed since the last call, as plain data for
        :meth:`restore` (None: the job has no state any more)."""
        changed, self._changed = self._changed, set()
        return {job_id: self._export(job_id) for job_id in sorted(changed)}

    def _export(self, job_id: str) -> dict[str, Any] | None:
        states = self._states.get(job_id) or {}
        finished = self._finished.get(job_id) or set()
        if not states and not finished:
            return None
        return {
            "states": [
                [
                    key[0],
                    key[1],
                    st.since,
                    st.warnings_sent,
                    st.last_warn_ts,
                    st.pos,
                    st.failures,
                    st.next_try_ts,
                ]
                for key, st in sorted(states.items())
            ],
            "finished": sorted([key[0], key[1], since] for key, since in finished),
        }

    def restore(self, saved: Mapping[str, Mapping[str, Any]]) -> None:
        """Take back what :meth:`take_changed` gave (after a restart). An action that was
        being carried out is not: the ladder decides it again."""
        self.revision += 1
        for job_id, data in saved.items():
            states: dict[tuple[str, str], _State] = {}
            for kind, code, since, sent, last_warn, pos, failures, next_try in data["states"]:
                st = _State(float(since))
                st.warnings_sent = int(sent)
                st.last_warn_ts = None if last_warn is None else float(last_warn)
                st.pos = int(pos)
                st.failures = int(failures)
                st.next_try_ts = None if next_try is None else float(next_try)
                states[(str(kind), str(code))] = st
            if states:
                self._states[job_id] = states
            finished = {((str(k), str(c)), float(since)) for k, c, since in data["finished"]}
            if finished:
                self._finished[job_id] = finished

    def take_pending(self) -> list[Decision]:
        """The actions decided since the last call, to be carried out by the caller."""
        out, self._pending = self._pending, []
        return out

    def step(
        self,
        now: float,
        allocation: Allocation,
        findings: Sequence[Finding | PendingFinding],
        policy: Policy,
        still_idle: Callable[[Finding], bool] | None = None,
    ) -> list[LadderEvent]:
        """Events of one evaluation. A pending finding is built only for an event."""
        job_id = allocation.job.job_id
        states = self._states.get(job_id)
        if not findings:
            if states:
                states.clear()  # active again (or data missing): the ladder resets
                self._changed.add(job_id)
            return []
        if states is None:
            states = self._states[job_id] = {}
        present: set[tuple[str, str]] = set()
        keys = []  # each finding's key, read once (a property of a whole Finding)
        idle_now = False
        for f in findings:
            key = f.key
            keys.append(key)
            present.add(key)
            if f.kind is FindingKind.IDLE:
                idle_now = True
        if not present.issuperset(states):
            # while idle, under-use and advice are not evaluated: keep their "reported" state
            for key, old in list(states.items()):
                if key not in present and not (idle_now and old.pos < 0):
                    del states[key]
                    self._changed.add(job_id)
        events: list[LadderEvent] = []
        for f, key in zip(findings, keys, strict=True):
            st: _State | None = states.get(key)
            if st is not None and st.pos < 0:
                continue  # report-only and already reported while it lasts
            if st is not None and st.since != f.since_ts:
                st = None  # a new idle streak: a new finding
            if st is None:
                st = states[key] = _State(f.since_ts)
                enforceable = f.kind is FindingKind.IDLE or (
                    f.kind is FindingKind.PARTLY_IDLE and policy.enforce_partly_idle
                )
                if not enforceable:
                    whole = f.finding()
                    events.append(
                        LadderEvent(
                            Decision(now, allocation, whole, Action.NONE),
                            Status.REPORTED,
                            whole.detail,
                        )
                    )
                    st.pos = -1  # marks report-only
                    continue
            events.extend(self._idle_step(now, allocation, f, st, policy, still_idle))
        if events:
            self._changed.add(job_id)
        return events

    def _idle_step(
        self,
        now: float,
        allocation: Allocation,
        pending: Finding | PendingFinding,
        st: _State,
        policy: Policy,
        still_idle: Callable[[Finding], bool] | None,
    ) -> list[LadderEvent]:
        job_id = allocation.job.job_id
        finished = self._finished.get(job_id)
        if finished is None:
            finished = self._finished[job_id] = set()
        elif (pending.key, pending.since_ts) in finished:
            return []
        due = st.last_warn_ts is None or now - st.last_warn_ts >= policy.warn_interval
        if not due:
            return []
        if st.warnings_sent < policy.warnings:
            f = pending.finding()
            st.warnings_sent += 1
            st.last_warn_ts = now
            d = Decision(now, allocation, f, Action.WARN, attempt=st.warnings_sent)
            return [
                LadderEvent(
                    d, Status.WARNED, f"warning {st.warnings_sent} of {policy.warnings}: {f.detail}"
                )
            ]
        chain = action_chain(allocation, policy)
        if st.pos >= len(chain):  # nothing (left) to do: keep warning
            f = pending.finding()
            st.last_warn_ts = now
            why = _why_no_action(allocation, policy) if not chain else "every action failed"
            d = Decision(now, allocation, f, Action.WARN, reason=why)
            return [LadderEvent(d, Status.WARNED, f"{why}; warning again: {f.detail}")]
        action = chain[st.pos]
        if not policy.enforce:
            f = pending.finding()
            finished.add((f.key, f.since_ts))
            d = Decision(now, allocation, f, action, attempt=0, reason="enforcement is off")
            return [LadderEvent(d, Status.DRY_RUN, f"dry run: would {action.value}: {f.detail}")]
        if st.in_flight is not None:
            return []  # its action is being carried out; the result comes back as an event
        if st.next_try_ts is not None and now < st.next_try_ts:
            return []
        f = pending.finding()
        d = Decision(now, allocation, f, action, attempt=st.failures + 1)
        if still_idle is not None and not still_idle(f):
            return [LadderEvent(d, Status.ABORTED, NOT_IDLE_ANYMORE)]
        if self._executor is None:
            st.in_flight = d
            self._pending.append(d)
            return []
        try:
            outcome = self._executor.execute(d)
        except Exception as exc:  # an executor bug must not stop the collector
            log.exception("action %s for job %s raised", action.value, job_id)
            outcome = ActionOutcome(False, f"{type(exc).__name__}: {exc}")
        return [self._apply(d, st, outcome, policy)]

    def _state_of(self, d: Decision) -> _State | None:
        st = self._states.get(d.job_id, {}).get(d.finding.key)
        if st is None or st.since != d.finding.since_ts:
            return None
        if st.in_flight is d:
            st.in_flight = None
        return st

    def on_aborted(self, d: Decision, detail: str) -> LadderEvent:
        """An action taken off :meth:`take_pending` was not carried out: the newest data,
        checked right before acting, was no longer idle."""
        self.revision += 1
        self._changed.add(d.job_id)
        self._state_of(d)
        return LadderEvent(d, Status.ABORTED, detail)

    def on_result(self, d: Decision, outcome: ActionOutcome, policy: Policy) -> LadderEvent:
        """The outcome of an action taken off :meth:`take_pending`. A retry after a failure
        is timed from the decision, so the ladder does not depend on how long it took."""
        self.revision += 1
        st = self._state_of(d)
        if st is None:  # the finding is gone (active again, job ended): report what happened
            st = _State(d.finding.since_ts)
            st.failures = d.attempt - 1
        return self._apply(d, st, outcome, policy)

    def _apply(
        self, d: Decision, st: _State, outcome: ActionOutcome, policy: Policy
    ) -> LadderEvent:
        f = d.finding
        action = d.action
        self._changed.add(d.job_id)
        if outcome.ok:
            self._finished.setdefault(d.job_id, set()).add((f.key, f.since_ts))
            return LadderEvent(d, Status.DONE, outcome.detail or f"{action.value}: {f.detail}")
        chain = action_chain(d.allocation, policy)
        st.failures += 1
        if st.failures >= policy.action_retries:
            st.pos += 1
            st.failures = 0
            st.next_try_ts = None
            nxt = chain[st.pos].value if st.pos < len(chain) else "warn"
            detail = (
                f"{action.value} failed ({outcome.detail}); gave up after "
                f"{policy.action_retries} attempts, falling back to {nxt}"
            )
        else:
            backoff = min(policy.action_backoff * 2 ** (st.failures - 1), policy.action_backoff_max)
            st.next_try_ts = d.ts + backoff
            detail = (
                f"{action.value} failed ({outcome.detail}); attempt {st.failures} of "
                f"{policy.action_retries}, retry in {backoff:g} s"
            )
        return LadderEvent(d, Status.FAILED, detail)
