"""The agent's main loop: sample every ``sample_interval``, report every ``report_interval``.

Sampling and attribution are blocking calls (NVML, /proc, scontrol) and run in one plain
thread with its own clock, so the gRPC stream keeps flowing and the event loop does not
wake for every sample. Each report is written to the spool before it is
sent; the streamer deletes it when the collector acks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gpuwarden
from gpuwarden.agent.attribution import Attribution, Attributor
from gpuwarden.agent.client import ReportStreamer, TlsFiles
from gpuwarden.agent.sampler import Sampler
from gpuwarden.agent.spool import Spool
from gpuwarden.agent.window import WindowAggregator
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.sdnotify import notify
from gpuwarden.common.types import NodeReport, SlurmStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AgentStats:
    samples: int
    sample_errors: int
    reports: int
    spooled: int
    sent: int
    acked: int
    dropped: int
    rejected: int
    corrupt: int  # spooled reports that could not be read back, moved to spool/corrupt/
    connected: bool


class Agent:
    def __init__(
        self,
        *,
        node: str,
        sampler: Sampler,
        attributor: Attributor,
        spool: Spool,
        collector: str,
        tls: TlsFiles | None = None,
        sample_interval_s: float = 1.0,
        report_interval_s: float = 5.0,
        reconnect_max_backoff_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        systemd: bool = False,
        drain_timeout_s: float = 3.0,
    ) -> None:
        self.drain_timeout_s = drain_timeout_s
        self.node = node
        self.sampler = sampler
        self.attributor = attributor
        self.spool = spool
        self.sample_interval_s = sample_interval_s
        self.report_interval_s = report_interval_s
        self.clock = clock
        self.systemd = systemd
        self.streamer = ReportStreamer(
            collector, spool, tls=tls, backoff_max_s=reconnect_max_backoff_s
        )
        self._agg = WindowAggregator()
        self._samples = 0
        self._sample_errors = 0
        self._reports = 0
        self._ready = False
        self._last_slurm = SlurmStatus(available=False, error="not yet attributed")

    def stats(self) -> AgentStats:
        return AgentStats(
            samples=self._samples,
            sample_errors=self._sample_errors,
            reports=self._reports,
            spooled=len(self.spool),
            sent=self.streamer.sent,
            acked=self.streamer.acked,
            dropped=self.spool.dropped,
            rejected=self.streamer.rejected,
            corrupt=self.spool.corrupt,
            connected=self.streamer.connected,
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or the task is cancelled); flushes the last window.

        Sampling runs in one plain thread with its own clock (``_sample_loop``): the event
        loop wakes only for the gRPC stream and once per report, which it spools and sends.
        """
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.sampler.open)
        streamer = asyncio.create_task(self.streamer.run(), name=f"stream-{self.node}")
        halt = threading.Event()
        finished: asyncio.Future[BaseException | None] = loop.create_future()
        worker = threading.Thread(
            target=self._sample_thread,
            args=(loop, halt, finished),
            name=f"sampler-{self.node}",
            daemon=True,
        )
        worker.start()
        try:
            stopping = asyncio.ensure_future(stop.wait())
            either: list[asyncio.Future[Any]] = [stopping, finished]
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            halt.set()
            error = await finished  # the thread has flushed its last window
            if error is not None:
                raise error
            await self._drain()
        finally:
            halt.set()
            await asyncio.to_thread(worker.join)
            streamer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await streamer
            await asyncio.to_thread(self.sampler.close)

    async def _drain(self) -> None:
        """On shutdown, give the collector a moment to ack what is spooled (it stays
        spooled either way and is sent after the next start)."""
        deadline = time.monotonic() + self.drain_timeout_s
        # Polling: acks arrive on the streamer's task; a short bounded wait at exit only.
        while len(self.spool) and self.streamer.connected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def _sample_thread(
        self,
        loop: asyncio.AbstractEventLoop,
        halt: threading.Event,
        finished: asyncio.Future[BaseException | None],
    ) -> None:
        error: BaseException | None = None
        try:
            self._sample_loop(loop, halt)
        except BaseException as exc:  # handed to run(), which re-raises it
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(_resolve, finished, error)

    def _sample_loop(self, loop: asyncio.AbstractEventLoop, halt: threading.Event) -> None:
        """Sample every ``sample_interval`` on the monotonic clock and hand a report to the
        event loop every ``report_interval``, until ``halt`` is set; then the last window."""
        window_start = self.clock()
        next_sample = time.monotonic()
        next_report = next_sample + self.report_interval_s
        while not halt.is_set():
            self._sample_once()
            next_sample += self.sample_interval_s
            now_m = time.monotonic()
            if now_m >= next_report:
                window_end = self.clock()
                self._report(loop, window_start, window_end)
                window_start = window_end
                next_report += self.report_interval_s
                if next_report < now_m:  # fell behind (suspended, overloaded): resync
                    next_report = now_m + self.report_interval_s
            if next_sample < now_m:
                next_sample = now_m
            halt.wait(max(0.0, next_sample - now_m))
        if len(self._agg):
            self._report(loop, window_start, self.clock())

    def _sample_once(self) -> None:
        try:
            samples = self.sampler.sample(self.clock())
        except Exception:
            self._sample_errors += 1
            log.exception("sampling failed")
            return
        self._samples += 1
        self._agg.add(samples)
        if self.systemd:
            if not self._ready:
                notify("READY=1")
                self._ready = True
            notify("WATCHDOG=1")

    def _report(
        self, loop: asyncio.AbstractEventLoop, window_start: float, window_end: float
    ) -> None:
        """Attribute and close the window (in the sampling thread); the event loop numbers,
        spools and sends it."""
        if not len(self._agg):
            return
        merged = self._agg.merged_samples()
        try:
            attribution = self.attributor.attribute(merged)
        except Exception as exc:  # an attributor must not raise; never lose GPU data if it does
            log.exception("attribution failed")
            attribution = Attribution(slurm=SlurmStatus(available=False, error=str(exc)))
        if attribution.slurm != self._last_slurm:
            log.info("slurm status: %s", attribution.slurm)
            self._last_slurm = attribution.slurm
        report = NodeReport(
            node=self.node,
            seq=0,  # numbered by the spool, in the event loop
            window_start=window_start,
            window_end=window_end,
            gpus=self._agg.flush(attribution.gpus),
            slurm=attribution.slurm,
            agent_version=gpuwarden.__version__,
        )
        self._reports += 1
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(self._spool_report, report)

    def _spool_report(self, report: NodeReport) -> None:
        # in the loop thread: the streamer shares the spool
        numbered = dataclasses.replace(report, seq=self.spool.next_seq())
        if self.spool.put(numbered.seq, report_to_pb(numbered).SerializeToString()):
            self.streamer.notify_new_report()


def _resolve(future: asyncio.Future[BaseException | None], error: BaseException | None) -> None:
    if not future.done():
        future.set_result(error)
