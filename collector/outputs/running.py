"""``RunningSink``: the one wrapper around every sink (Telegraf's RunningOutput is the model).

The collector's ingest path calls :meth:`RunningSink.offer` after each group commit; it only
appends to a bounded in-memory queue and returns, so a slow or broken sink never delays
ingestion (a full queue drops the offer, counted and logged). A thread per sink:

- gathers windows into batches of ``batch_max`` (or whatever waited ``flush_interval``) and
  calls ``sink.write(batch)``;
- when a write (or ``open``) fails, keeps the batch in the on-disk :class:`Backlog` and
  retries the oldest backlog batch with jittered exponential backoff; while anything is in
  the backlog, new batches go behind it on disk, so delivery stays in order, and a batch is
  removed from the backlog only after the sink took it (nothing lost, nothing sent twice);
- on stop, hands what is still queued to the sink if it is healthy, else to the backlog,
  which the next start delivers.

:class:`SinkStats` (delivered, queued, backlog, drops, failures) is what metrics expose.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.collector.outputs.backlog import Backlog
from gpuwarden.collector.outputs.sink import Sink
from gpuwarden.common.config import duration_field, ranged
from gpuwarden.common.types import NodeReport, WindowRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """The wrapper's settings, from the same ``[sinks.NAME]`` table as the sink's own."""

    type: str = ""  # registry name; default: the instance name
    queue_max: int = ranged(100_000, minimum=1)  # windows waiting in memory
    batch_max: int = ranged(1000, minimum=1)  # windows per write
    flush_interval: float = duration_field(1.0, minimum=0.001)
    retry_initial: float = duration_field(1.0, minimum=0.001)
    retry_max_backoff: float = duration_field(60.0, minimum=0.001)
    backlog_max_windows: int = ranged(1_000_000, minimum=1)
    backlog_max_bytes: int = ranged(512 << 20, minimum=4096)

    def __post_init__(self) -> None:
        if self.backlog_max_windows < self.batch_max:
            raise ValueError(
                f"backlog_max_windows ({self.backlog_max_windows}) is below batch_max "
                f"({self.batch_max})"
            )


@dataclass(frozen=True, slots=True)
class SinkStats:
    name: str
    delivered: int  # windows the sink took
    queued: int  # windows waiting in memory
    backlog: int  # windows waiting on disk
    dropped_queue_full: int  # offers refused because the queue was full
    dropped_backlog: int  # oldest backlog windows deleted beyond its bound
    failures: int  # failed open/write calls
    healthy: bool  # the last open/write succeeded
    last_error: str


class RunningSink:
    def __init__(
        self,
        name: str,
        sink: Sink,
        settings: SinkSettings,
        backlog_dir: Path,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.sink = sink
        self.settings = settings
        self.backlog = Backlog(
            backlog_dir,
            max_windows=settings.backlog_max_windows,
            max_bytes=settings.backlog_max_bytes,
        )
        self._rng = rng
        self._cond = threading.Condition()
        self._queue: deque[tuple[float, WindowRecord]] = deque()  # (monotonic time, window)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._opened = False
        self._retry_at = 0.0
        self._attempts = 0  # consecutive failures
        self._delivered = 0
        self._dropped_queue = 0
        self._failures = 0
        self._last_error = ""

    # -- the ingest side (any thread; never blocks on the sink) --------------------------
    def offer(self, records: Sequence[WindowRecord]) -> bool:
        """Queue ``records``; False (and counted as dropped) when the queue has no room."""
        if not records:
            return True
        now = time.monotonic()
        with self._cond:
            if len(self._queue) + len(records) > self.settings.queue_max:
                before = self._dropped_queue
                self._dropped_queue += len(records)
                if before == 0 or before // 10_000 != self._dropped_queue // 10_000:
                    log.warning(
                        "sink %s: queue full (%d windows); dropped %d windows so far",
                        self.name,
                        self.settings.queue_max,
                        self._dropped_queue,
                    )
                return False
            self._queue.extend((now, r) for r in records)
            self._cond.notify()
        return True

    def stats(self) -> SinkStats:
        with self._cond:
            return SinkStats(
                name=self.name,
                delivered=self._delivered,
                queued=len(self._queue),
                backlog=self.backlog.windows,
                dropped_queue_full=self._dropped_queue,
                dropped_backlog=self.backlog.dropped,
                failures=self._failures,
                healthy=self._attempts == 0,
                last_error=self._last_error,
            )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Deliver or keep on disk what is queued, close the sink, end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("sink %s: still busy after %.0f s at shutdown", self.name, timeout_s)
            self._thread = None

    # -- the sink's thread -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stopping and (wait := self._wait_s()) > 0:
                        self._cond.wait(wait)
                    stopping = self._stopping
                if stopping:
                    self._shutdown()
                    return
                self._step()
        except Exception:  # a bug here must not take the collector down; it is logged
            log.exception("sink %s: worker failed; its windows go to the backlog", self.name)
            self._spill(everything=True)

    def _wait_s(self) -> float:
        """Seconds until there is work; 0 when there is some now (called under the lock)."""
        now = time.monotonic()
        due: list[float] = []
        if len(self.backlog):
            due.append(self._retry_at)
        if self._queue:
            if len(self._queue) >= self.settings.batch_max:
                return 0.0
            due.append(self._queue[0][0] + self.settings.flush_interval)
        if not due:
            return 3600.0
        return max(0.0, min(due) - now)

    def _take(self, everything: bool = False) -> list[WindowRecord]:
        """The next batch from the queue (ready ones only unless ``everything``)."""
        with self._cond:
            n = min(len(self._queue), self.settings.batch_max)
            if not everything and n < self.settings.batch_max:
                if not self._queue:
                    return []
                if self._queue[0][0] + self.settings.flush_interval > time.monotonic():
                    return []
            return [self._queue.popleft()[1] for _ in range(n)]

    def _step(self) -> None:
        if len(self.backlog):
            self._spill()  # new windows queue up behind the backlog, on disk
            if time.monotonic() >= self._retry_at:
                self._retry_oldest()
            return
        batch = self._take()
        if batch and not self._deliver(batch):
            self.backlog.append(batch)

    def _spill(self, everything: bool = False) -> None:
        while batch := self._take(everything):
            self.backlog.append(batch)

    def _retry_oldest(self) -> None:
        oldest = self.backlog.oldest()
        if oldest is None:
            return
        seq, batch = oldest
        if self._deliver(batch):
            self.backlog.remove(seq)
            if not len(self.backlog):
                log.info("sink %s: backlog drained", self.name)

    def _deliver(self, batch: list[WindowRecord]) -> bool:
        try:
            if not self._opened:
                self.sink.open()
                self._opened = True
            self.sink.write(batch)
        except Exception as exc:
            self._failed(exc)
            return False
        with self._cond:
            self._delivered += len(batch)
            if self._attempts:
                log.warning("sink %s: writing again after %d failures", self.name, self._attempts)
            self._attempts = 0
        return True

    def _failed(self, exc: Exception) -> None:
        if self._opened:
            self._close_sink()  # reopen on the next try: the connection may be the problem
        backoff = min(
            self.settings.retry_max_backoff, self.settings.retry_initial * 2.0**self._attempts
        )
        delay = backoff * (0.5 + 0.5 * self._rng())  # jitter: sinks do not retry in step
        with self._cond:
            self._attempts += 1
            self._failures += 1
            self._last_error = f"{type(exc).__name__}: {exc}"[:500]
            self._retry_at = time.monotonic() + delay
        log.warning(
            "sink %s: delivery failed (%s); keeping the windows on disk, retry in %.1f s",
            self.name,
            self._last_error,
            delay,
        )

    def _close_sink(self) -> None:
        self._opened = False
        try:
            self.sink.close()
        except Exception:
            log.exception("sink %s: close failed", self.name)

    def _shutdown(self) -> None:
        if not len(self.backlog) and self._attempts == 0:
            while batch := self._take(everything=True):
                if not self._deliver(batch):
                    self.backlog.append(batch)
                    break
        self._spill(everything=True)
        if self._opened:
            self._close_sink()


def windows_of(reports: Sequence[NodeReport]) -> list[WindowRecord]:
    """The stored windows of ``reports``: one per GPU per report."""
    return [
        WindowRecord(node=r.node, window_start=r.window_start, window_end=r.window_end, gpu=g)
        for r in reports
        for g in r.gpus
    ]


class SinkSet:
    """Every configured sink; the ingest path hands each group commit to all of them."""

    def __init__(self, sinks: Sequence[RunningSink] = ()) -> None:
        self.sinks = list(sinks)

    def __len__(self) -> int:
        return len(self.sinks)

    def offer_reports(self, reports: Sequence[NodeReport]) -> None:
        if not self.sinks or not reports:
            return
        records = windows_of(reports)
        for s in self.sinks:
            s.offer(records)

    def start(self) -> None:
        for s in self.sinks:
            s.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        for s in self.sinks:
            s.stop(timeout_s)

    def stats(self) -> list[SinkStats]:
        return [s.stats() for s in self.sinks]
