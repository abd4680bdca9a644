"""Off the evaluation path: actions on a small bounded worker pool, events to subscribers.

A slow Dask scheduler or Slurm controller must never stall detection for everyone else, and
neither may a slow subscriber of ladder events. :class:`ActionWorker` runs each action in a
thread of its own small pool (at most one per job at a time, a bounded queue) and keeps the
outcomes until the engine collects them. :class:`Fanout` hands records to subscribers from
one thread of its own, through a bounded queue, counting what it had to drop.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from gpuwarden.collector.ladder import ActionExecutor, ActionOutcome, Decision

log = logging.getLogger(__name__)

T = TypeVar("T")

StillIdle = Callable[[Decision], bool]


class ActionWorker:
    """Carries out decisions on ``workers`` threads; at most ``queue_max`` waiting or
    running, one per job. :meth:`submit` never blocks; :meth:`results` returns what finished
    since the last call: (decision, outcome), or (decision, None) when the check right before
    acting (``still_idle``) found the allocation in use."""

    def __init__(
        self,
        executor: ActionExecutor,
        still_idle: StillIdle,
        *,
        workers: int = 4,
        queue_max: int = 64,
        on_result: Callable[[], None] | None = None,
    ) -> None:
        self._executor = executor
        self._still_idle = still_idle
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gw-action")
        self._queue_max = queue_max
        self._busy: set[str] = set()
        self._done: list[tuple[Decision, ActionOutcome | None]] = []
        self._lock = threading.Lock()
        self._on_result = on_result

    def submit(self, decision: Decision) -> str | None:
        """Queue ``decision``; None when queued, else why not (the caller reports it)."""
        with self._lock:
            if decision.job_id in self._busy:
                return f"an action for job {decision.job_id} is still being carried out"
            if len(self._busy) >= self._queue_max:
                return f"{len(self._busy)} actions are already waiting or running"
            self._busy.add(decision.job_id)
        self._pool.submit(self._run, decision)
        return None

    def _run(self, decision: Decision) -> None:
        outcome: ActionOutcome | None
        try:
            still_idle = self._still_idle(decision)
            outcome = self._executor.execute(decision) if still_idle else None
        except Exception as exc:  # an executor bug must not stop the collector
            log.exception("action %s for job %s raised", decision.action.value, decision.job_id)
            outcome = ActionOutcome(False, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._busy.discard(decision.job_id)
            self._done.append((decision, outcome))
        if self._on_result is not None:
            self._on_result()

    def results(self) -> list[tuple[Decision, ActionOutcome | None]]:
        with self._lock:
            out, self._done = self._done, []
            return out

    def in_flight(self) -> int:
        with self._lock:
            return len(self._busy)

    def close(self) -> None:
        """Stop taking actions; one still running is not waited for."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class Fanout(Generic[T]):
    """Hands each item to every subscriber, from one thread, without blocking the caller.

    A subscriber that raises is logged and keeps its place; when the queue is full the item is
    dropped for all and counted in :attr:`dropped`."""

    def __init__(self, subscribers: list[Callable[[T], None]], *, queue_max: int = 10_000) -> None:
        self.subscribers = subscribers
        self.dropped = 0
        self._queue: queue.Queue[T | None] = queue.Queue(maxsize=queue_max)
        self._thread: threading.Thread | None = None

    def publish(self, item: T) -> None:
        if not self.subscribers:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gw-fanout", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            for sub in list(self.subscribers):
                try:
                    sub(item)
                except Exception:
                    log.exception("event subscriber %r failed", sub)

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout_s``), then stop."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._thread = None
