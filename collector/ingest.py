"""Group commit: reports from every agent stream are written in shared transactions.

A stream hands each validated report to :meth:`Ingestor.submit` and gets a future that
resolves (True = stored now, False = duplicate) after the transaction that holds it has
committed. Only then does the stream ack it. The stored windows are then offered to every
sink's queue (never waiting on a sink).

One report never fails another's: when a shared transaction fails, each report is written
again on its own. A report that fails alone for a reason of its own content (a value SQLite
cannot hold) is refused with :class:`ReportInvalid`, so its agent sets it aside; when every
report fails, the store itself is at fault and all of them are to be resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Sequence

from gpuwarden.collector.outputs.running import SinkSet
from gpuwarden.collector.state import ClusterState
from gpuwarden.collector.store import Store, StoreUnavailable
from gpuwarden.collector.validate import ReportInvalid
from gpuwarden.common.types import NodeReport
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

log = logging.getLogger(__name__)

_Item = tuple[NodeReport, Sequence[pb.GpuWindow] | None, asyncio.Future[bool]]
StoredListener = Callable[[Sequence[NodeReport]], None]

# Transactions start at least this far apart (``[collector] commit_window``).
COMMIT_WINDOW_S = 0.02

# What SQLite raises for a value it cannot bind: the report's fault, not the store's.
_CONTENT_ERRORS = (OverflowError, ValueError, TypeError, sqlite3.InterfaceError)


class Ingestor:
    def __init__(
        self,
        store: Store,
        state: ClusterState,
        *,
        batch_max: int = 512,
        commit_window_s: float = COMMIT_WINDOW_S,
        sinks: SinkSet | None = None,
    ) -> None:
        if not 0 <= commit_window_s <= 1:
            raise ValueError(f"commit_window_s={commit_window_s} is not within 0..1 s")
        self.store = store
        self.state = state
        self.sinks = sinks or SinkSet()
        self.batch_max = batch_max
        # Transactions start at least this far apart, so that thousands of agents each
        # sending now and then share one fsync. A report after a quiet spell is written at
        # once, and under load (a write takes longer than the window) nobody waits. Nor
        # does one agent alone (the last transaction and the next report are all one node's):
        # there is nobody to share the fsync with, and waiting would hold its stream back.
        self.commit_window_s = commit_window_s
        self._last_write = -math.inf  # time.monotonic() when the last transaction began
        self._alone: str | None = None  # the one node of the last transaction, if one
        self.listeners: list[StoredListener] = []
        self.fault: str | None = None  # why the store cannot write now, None when it can
        self.fault_listeners: list[Callable[[str | None], None]] = []
        self.stored = 0
        self.duplicates = 0
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def submit(
        self, report: NodeReport, received_pb: Sequence[pb.GpuWindow] | None = None
    ) -> asyncio.Future[bool]:
        """Queue ``report`` for the next transaction. ``received_pb``: its GPU windows'
        messages as received, which the store keeps (and changes: the caller is done with
        them); None: the store encodes the windows."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((report, received_pb, fut))
        return fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            wait = self._last_write + self.commit_window_s - time.monotonic()
            first = batch[0][0].node
            if wait > 0 and first != self._alone and self._queue.qsize() < self.batch_max:
                await asyncio.sleep(wait)
            self._last_write = time.monotonic()
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._alone = None if any(r.node != first for r, _, _ in batch) else first
            try:
                outcomes = await self._write(batch)
                fresh = [r for (r, _, _), ok in zip(batch, outcomes, strict=True) if ok is True]
                self.stored += len(fresh)
                self.duplicates += sum(1 for ok in outcomes if ok is False)
                for r in fresh:
                    self.state.apply(r)
                for listener in self.listeners:
                    try:
                        listener(fresh)
                    except Exception:
                        log.exception("stored-report listener failed")
                self.sinks.offer_reports(fresh)
                for (_, _, fut), ok in zip(batch, outcomes, strict=True):
                    if fut.done():
                        continue
                    if isinstance(ok, BaseException):
                        fut.set_exception(ok)
                    else:
                        fut.set_result(ok)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[_Item]) -> list[bool | BaseException]:
        """Per report: True stored, False duplicate, or the exception to hand its stream."""
        reports = [r for r, _, _ in batch]
        received_pb = [m for _, m, _ in batch]
        now = time.time()
        try:
            results: list[bool | BaseException] = list(
                await asyncio.to_thread(self.store.write_reports, reports, now, received_pb)
            )
        except StoreUnavailable as exc:
            self._set_fault(str(exc))
            return [exc] * len(reports)
        except Exception as exc:
            if len(reports) == 1:
                return [self._blame(reports[0], exc)]
            log.warning(
                "a transaction of %d reports failed (%s); writing each alone", len(batch), exc
            )
            results = []
            for r, m in zip(reports, received_pb, strict=True):
                try:
                    results.extend(await asyncio.to_thread(self.store.write_reports, [r], now, [m]))
                except Exception as exc:
                    results.append(self._blame(r, exc))
        self._set_fault(None)
        return results

    def _set_fault(self, reason: str | None) -> None:
        """One log line and one callback per change, however many writes fail meanwhile."""
        if reason == self.fault or (reason is not None and self.fault is not None):
            return
        self.fault = reason
        if reason is None:
            log.warning("the store is writable again; agents' spooled reports are coming in")
        else:
            log.error("cannot store reports: %s; agents keep them in their spools", reason)
        for callback in self.fault_listeners:
            callback(reason)

    @staticmethod
    def _blame(report: NodeReport, exc: Exception) -> BaseException:
        if isinstance(exc, _CONTENT_ERRORS):
            log.warning("report seq=%d of %s cannot be stored: %s", report.seq, report.node, exc)
            return ReportInvalid(f"report seq={report.seq} cannot be stored: {exc}")
        log.error("storing report seq=%d of %s failed: %s", report.seq, report.node, exc)
        return exc
