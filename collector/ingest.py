"""Group commit: reports from every agent stream are written in shared transactions.

A stream hands each validated report to :meth:`Ingestor.submit` and gets a future that
resolves (True = stored now, False = duplicate) after the transaction that holds it has
committed. Only then does the stream ack it. The stored windows are then offered to every
sink's queue (never waiting on a sink).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from gpuwarden.collector.outputs.running import SinkSet
from gpuwarden.collector.state import ClusterState
from gpuwarden.collector.store import Store
from gpuwarden.common.types import NodeReport

log = logging.getLogger(__name__)

StoredListener = Callable[[Sequence[NodeReport]], None]


class Ingestor:
    def __init__(
        self,
        store: Store,
        state: ClusterState,
        *,
        batch_max: int = 512,
        sinks: SinkSet | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.sinks = sinks or SinkSet()
        self.batch_max = batch_max
        self.listeners: list[StoredListener] = []
        self.stored = 0
        self.duplicates = 0
        self._queue: asyncio.Queue[tuple[NodeReport, asyncio.Future[bool]]] = asyncio.Queue()
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

    def submit(self, report: NodeReport) -> asyncio.Future[bool]:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((report, fut))
        return fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            reports = [r for r, _ in batch]
            try:
                results = await asyncio.to_thread(self.store.write_reports, reports, time.time())
            except Exception as exc:
                log.exception("storing %d reports failed; agents will resend them", len(batch))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                fresh = [r for r, ok in zip(reports, results, strict=True) if ok]
                self.stored += len(fresh)
                self.duplicates += len(reports) - len(fresh)
                for r in fresh:
                    self.state.apply(r)
                for listener in self.listeners:
                    try:
                        listener(fresh)
                    except Exception:
                        log.exception("stored-report listener failed")
                self.sinks.offer_reports(fresh)
                for (_, fut), ok in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(ok)
            finally:
                for _ in batch:
                    self._queue.task_done()
