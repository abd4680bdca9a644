"""Live detection and enforcement in the collector: the replay engine, wired to the world.

The live collector is :class:`Engine` + store + action worker + audit log + publishers.
Stored reports are handed to the engine by the ingest path (event loop); the evaluation runs
in a worker thread every ``evaluate_interval`` with the wall clock as ``now``, and the engine
decides on data time (see :mod:`engine`), so the audit log holds what ``gpuwarden replay``
of the same windows prints. Due actions go to an :class:`ActionWorker` (a small bounded
pool, one action per job at a time) which re-checks the newest data right before acting;
outcomes come back as events at the next evaluation. Every ladder event is appended to the
audit log (SQLite table and JSON lines), published on the watch stream and handed, without
blocking, to the subscribers in ``listeners`` (e.g. researcher notifiers).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gpuwarden.collector.audit import AuditLog, AuditRecord, record_from_event
from gpuwarden.collector.dispatch import ActionWorker, Fanout
from gpuwarden.collector.engine import Engine
from gpuwarden.collector.gcfreeze import GcFreezer
from gpuwarden.collector.ladder import (
    NOT_IDLE_ANYMORE,
    ActionExecutor,
    ActionOutcome,
    Decision,
    LadderEvent,
)
from gpuwarden.collector.ladder_state import LadderStateTable
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.server import Collector
from gpuwarden.collector.store import Store, connect
from gpuwarden.common.types import NodeReport, WindowRecord

log = logging.getLogger(__name__)

AuditListener = Callable[[AuditRecord], None]


class Enforcer:
    def __init__(
        self,
        *,
        store: Store,
        policies: PolicySet,
        audit: AuditLog,
        executor: ActionExecutor | None,
        actor: str = "gpuwarden-collector",
        publish: Callable[[AuditRecord], None] | None = None,
        listeners: Sequence[AuditListener] = (),
        job_gone_after_s: float = 900.0,
        reorder_s: float | None = None,
        clock: Callable[[], float] = time.time,
        action_workers: int = 4,
        action_queue_max: int = 64,
        ladder_state: LadderStateTable | None = None,
    ) -> None:
        self.store = store
        self.policies = policies
        self.audit = audit
        self.actor = actor
        self.publish = publish
        self.clock = clock
        self.engine = Engine(policies, reorder_s=reorder_s, job_gone_after_s=job_gone_after_s)
        self.worker = (
            None
            if executor is None
            else ActionWorker(
                executor,
                self._still_idle,
                workers=action_workers,
                queue_max=action_queue_max,
            )
        )
        self.listeners: list[AuditListener] = list(listeners)
        self.fanout: Fanout[AuditRecord] = Fanout(self.listeners)
        # (job id, start or 0, end) of every run that ended, e.g. to write its summary
        self.run_end_listeners: list[Callable[[tuple[str, int, float]], None]] = []
        self.run_ends: Fanout[tuple[str, int, float]] = Fanout(self.run_end_listeners)
        self.ladder_state = ladder_state
        self.evaluations = 0
        # The evaluation thread lets the event loop run (``pause``, see :func:`loop_turn`)
        # after every ``slice_s`` of work, so that acks never wait behind a whole pass.
        self.pause: Callable[[], None] | None = None
        self.slice_s = 0.002
        self.pauses = 0
        self._inbox: collections.deque[NodeReport] = collections.deque()
        self.lock = threading.Lock()  # one evaluation at a time
        self._warm = False
        # Per node, the newest window end warm-up read from the store: a report queued
        # meanwhile that is no newer was read there already (dropped until the first pass).
        self._read_until: dict[str, float] = {}

    def set_policies(self, policies: PolicySet) -> None:
        """Take a reloaded policy (between two evaluations)."""
        with self.lock:
            self.policies = policies
            self.engine.set_policies(policies)

    def add_listener(self, listener: AuditListener) -> None:
        """Subscribe to every audit record (called from a thread of its own; must not block
        for long, and what it raises is logged)."""
        self.listeners.append(listener)

    # -- called from the ingest path (event loop thread) --------------------------------
    def on_stored(self, reports: Sequence[NodeReport]) -> None:
        """Never waits for an evaluation: the reports are handed over through a queue."""
        self._inbox.extend(reports)  # deque appends are thread-safe

    def _drain(self, turn: Callable[[], None] = lambda: None) -> None:
        """Move what ingest handed over into the engine (evaluation and action threads)."""
        inbox = self._inbox
        read_until = self._read_until
        while inbox:
            try:
                r = inbox.popleft()
            except IndexError:  # another thread took the last one
                return
            if read_until and r.window_end <= read_until.get(r.node, -math.inf):
                continue  # stored before warm-up read the store: the engine has it
            attributed = r.slurm.available
            for g in r.gpus:
                rec = WindowRecord(r.node, r.window_start, r.window_end, g)
                self.engine.on_window(rec, attributed)
            turn()

    def _turns(self) -> Callable[[], None]:
        """A callable for the work loops of one evaluation: it calls :attr:`pause` once
        ``slice_s`` has passed since the last pause (or does nothing without one)."""
        pause = self.pause
        if pause is None:
            return lambda: None
        slice_s = self.slice_s
        due = time.perf_counter() + slice_s

        def turn() -> None:
            nonlocal due
            if time.perf_counter() >= due:
                pause()
                self.pauses += 1
                due = time.perf_counter() + slice_s

        return turn

    def _advance(self, now: float, turn: Callable[[], None]) -> None:
        """Process the buffered windows up to the watermark one data time at a time (the
        engine gives the same events as in one step), letting the loop run in between."""
        if self.pause is None:
            return  # one step: engine.evaluate
        engine = self.engine
        watermark = now - engine.reorder_s
        while (t := engine.next_time()) is not None and t <= watermark:
            engine.advance_to(t)
            turn()

    def _still_idle(self, decision: Decision) -> bool:
        """The check right before acting, with the newest windows stored."""
        self._drain()
        return self.engine.still_idle(decision)

    def warm_up(self, now: float | None = None) -> None:
        """After a restart: rebuild the idle streaks from the stored windows, once (the
        first evaluation does it if nobody did). Reading a full store takes minutes: call
        it off the event loop, after :meth:`on_stored` is subscribed (nothing stored
        meanwhile is lost; what both the store and the queue hold is taken once)."""
        with self.lock:
            self._warm_up(now)

    def _warm_up(self, now: float | None) -> None:
        if self._warm:
            return
        self._warm = True
        now = self.clock() if now is None else now
        horizon = max(
            max(p.idle_window + p.grace_period, p.underuse_window) + p.max_gap
            for p in (self.policies.default, *self.policies.partitions.values())
        )
        records, truncated = self.store.history(since=now - horizon, limit=2_000_000)
        if truncated:
            log.warning("warm-up: stored windows truncated; some idle streaks start afresh")
        self.engine.warm_up(records, now - self.engine.reorder_s)
        read_until: dict[str, float] = {}
        for rec in records:
            if rec.window_end > read_until.get(rec.node, -math.inf):
                read_until[rec.node] = rec.window_end
        self._read_until = read_until
        del records
        if self.ladder_state is not None:  # warnings sent and actions taken before it
            self.engine.ladder.restore(self.ladder_state.load(keep=self.engine.jobs()))
            self.engine.ladder.take_changed()

    # -- evaluation (worker thread) -----------------------------------------------------
    def evaluate(self, now: float | None = None) -> list[AuditRecord]:
        """Collect action outcomes, run the engine up to ``now`` (default: the clock), hand
        due actions to the worker; return the audit records written."""
        with self.lock:
            self._warm_up(None)
            now = self.clock() if now is None else now
            turn = self._turns()
            self._drain(turn)
            self._read_until = {}
            engine = self.engine
            events: list[LadderEvent] = []
            if self.worker is not None:
                for decision, outcome in self.worker.results():
                    if outcome is None:
                        events.append(engine.on_action_aborted(decision, NOT_IDLE_ANYMORE))
                    else:
                        events.append(engine.on_action_result(decision, outcome))
            self._advance(now, turn)
            events.extend(engine.evaluate(now))
            for decision in engine.take_actions():
                why = (
                    "no action executor is configured on the collector"
                    if self.worker is None
                    else self.worker.submit(decision)
                )
                if why is not None:
                    events.append(engine.on_action_result(decision, ActionOutcome(False, why)))
            out = [self._emit(e) for e in events]
            for ended in engine.take_ended_runs():
                self.run_ends.publish(ended)
            if self.ladder_state is not None:
                self.ladder_state.save(engine.ladder.take_changed(), now)
            self.evaluations += 1
            return out

    def _emit(self, event: LadderEvent) -> AuditRecord:
        policy = self.policies.for_job(event.decision.allocation.job)
        record = record_from_event(event, policy, actor=self.actor)
        self.audit.append(record)
        log.info(
            "job %s: %s %s (%s) %s",
            record.job_id,
            record.kind,
            record.action,
            record.outcome,
            record.detail,
        )
        if self.publish is not None:
            self.publish(record)
        self.fanout.publish(record)
        return record

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        self.fanout.close()
        self.run_ends.close()

    def jobs(self) -> list[str]:
        return self.engine.jobs()


def loop_turn(loop: asyncio.AbstractEventLoop, timeout_s: float = 1.0) -> Callable[[], None]:
    """A pause for a worker thread: it returns once ``loop`` has run the callbacks that were
    ready when it was called (the thread holds no GIL meanwhile), or after ``timeout_s``.
    Call this on the loop's thread; there (an evaluation run on the loop) it does nothing."""
    loop_thread = threading.get_ident()

    def pause() -> None:
        if threading.get_ident() == loop_thread:
            return
        done = threading.Event()
        try:
            loop.call_soon_threadsafe(done.set)
        except RuntimeError:  # the loop is closed: nothing to wait for
            return
        done.wait(timeout_s)

    return pause


class AuditQuery:
    """Read side of the audit table for the query API (its own connection and lock)."""

    def __init__(self, db_path: Path) -> None:
        self._log = AuditLog(conn=connect(db_path))
        self._lock = threading.Lock()

    def query(self, job_id: str, since: float, limit: int) -> list[AuditRecord]:
        with self._lock:
            return self._log.query(job_id=job_id or None, since=since or None, limit=limit)


def attach_enforcement(
    collector: Collector,
    *,
    policies: PolicySet,
    executor: ActionExecutor | None,
    audit_jsonl: Path | None,
    evaluate_interval_s: float,
    actor: str = "gpuwarden-collector",
    job_gone_after_s: float = 900.0,
    reorder_s: float | None = None,
    listeners: Sequence[AuditListener] = (),
    gc_freezer: GcFreezer | None = None,
) -> Enforcer:
    """Run detection (and, where policy says so, enforcement) inside ``collector``.
    Call after ``collector.start()``. Every audit record goes to the collector's notifier
    hub and to ``listeners``, off the evaluation thread. ``reorder_s``: how long windows wait
    for stragglers from other nodes before the engine processes them (default: the policy's
    ``window``). ``gc_freezer``: keeps the cyclic GC off the long-lived state after each
    evaluation (see :mod:`gcfreeze`; the daemon's, not for a process it shares)."""
    loop = asyncio.get_running_loop()
    audit = AuditLog(conn=connect(collector.store.path), jsonl=audit_jsonl)
    ladder_state = LadderStateTable(connect(collector.store.path))
    collector.audit = AuditQuery(collector.store.path)

    def publish(record: AuditRecord) -> None:
        loop.call_soon_threadsafe(collector.state.publish, record)

    enforcer = Enforcer(
        store=collector.store,
        policies=policies,
        audit=audit,
        executor=executor,
        actor=actor,
        publish=publish,
        listeners=[collector.notifiers.submit, *listeners],  # researcher alerts first
        job_gone_after_s=job_gone_after_s,
        reorder_s=reorder_s,
        ladder_state=ladder_state,
    )
    collector.jobstats.policies = policies
    enforcer.run_end_listeners.append(collector.jobstats.on_run_end)
    enforcer.engine.exempt = collector.is_exempt  # admin exemptions, without a restart
    enforcer.pause = loop_turn(loop)
    collector.add_stored_listener(enforcer.on_stored)  # before warm-up reads the store

    def evaluate() -> None:
        enforcer.evaluate()
        if gc_freezer is not None:
            gc_freezer.after_pass()

    async def evaluate_forever() -> None:
        try:
            try:
                await asyncio.to_thread(enforcer.warm_up)  # off the loop: acks go on
            except Exception:
                log.exception("warm-up failed; idle streaks start afresh")
            if gc_freezer is not None:  # what start-up and warm-up built lives on: the
                gc_freezer.after_pass()  # first full collections (agents connecting) skip it
            while True:
                await asyncio.sleep(evaluate_interval_s)
                try:
                    await asyncio.to_thread(evaluate)
                except Exception:
                    log.exception("evaluation failed; trying again in %.0f s", evaluate_interval_s)
        finally:
            # An evaluation may still be running in its thread (cancelled here, not there):
            # close the audit log only when it has finished, so no record is cut off.
            def close() -> None:
                enforcer.close()
                with enforcer.lock:
                    audit.close()
                    ladder_state.close()

            await asyncio.to_thread(close)

    collector.add_background(evaluate_forever, "enforce")
    return enforcer
