"""The agent's main loop: sample every ``sample_interval``, report every ``report_interval``.

Two plain threads and no event loop: the sampling thread (NVML, /proc, scontrol are
blocking calls) keeps its own clock, closes a window every ``report_interval``, numbers it,
writes it to the spool and, when the stream is up and caught up, sends it; the streaming
thread (the one that calls ``serve``) reads acks, deletes what they ack, sends backlogs and
reconnects. ``run`` is the same agent for a
caller with an event loop (the demo, tests): ``serve`` in a thread of its own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gpuwarden
from gpuwarden.agent.attribution import Attribution, Attributor
from gpuwarden.agent.client import ReportStreamer, TlsFiles
from gpuwarden.agent.sampler import Sampler
from gpuwarden.agent.spool import Spool
from gpuwarden.agent.window import WindowAggregator
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.sdnotify import notify
from gpuwarden.common.types import NodeReport, SlurmStatus

if TYPE_CHECKING:
    import asyncio

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
        self._halt = threading.Event()
        self._error: BaseException | None = None
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

    def stop(self) -> None:
        """Stop: sampling ends with its last window spooled, then streaming, after at most
        ``drain_timeout_s`` of acks. From any thread, or a signal handler."""
        self._halt.set()

    def serve(self) -> None:
        """Sample and stream, in this thread, until ``stop``; raises what ended the sampling
        thread, if anything did."""
        self.sampler.open()
        worker = threading.Thread(
            target=self._sample_thread, name=f"sampler-{self.node}", daemon=True
        )
        worker.start()
        try:
            self.streamer.run()  # until the sampling thread has ended and says so
        finally:
            self._halt.set()
            worker.join()
            self.sampler.close()
        if self._error is not None:
            raise self._error

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """``serve`` for a caller with an event loop: runs until ``stop`` is set (or the task
        is cancelled), in a thread of its own; re-raises what ended it."""
        import asyncio

        loop = asyncio.get_running_loop()
        finished: asyncio.Future[BaseException | None] = loop.create_future()

        def serve() -> None:
            error: BaseException | None = None
            try:
                self.serve()
            except BaseException as exc:  # handed to the event loop, which re-raises it
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(_resolve, finished, error)

        threading.Thread(target=serve, name=f"agent-{self.node}", daemon=True).start()
        stopping = asyncio.ensure_future((stop or asyncio.Event()).wait())
        either: list[asyncio.Future[Any]] = [stopping, finished]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            self.stop()
            error = await finished
        if error is not None:
            raise error

    def _sample_thread(self) -> None:
        try:
            self._sample_loop()
        except BaseException as exc:  # handed to serve(), which re-raises it
            self._error = exc
        finally:  # the last window is spooled: streaming may end
            self.streamer.stop(drain_s=self.drain_timeout_s if self._error is None else 0.0)

    def _sample_loop(self) -> None:
        """Sample every ``sample_interval`` on the monotonic clock and spool a report every
        ``report_interval``, until ``stop``; then the last window."""
        halt = self._halt
        window_start = self.clock()
        next_sample = time.monotonic()
        next_report = next_sample + self.report_interval_s
        while not halt.is_set():
            self._sample_once()
            next_sample += self.sample_interval_s
            now_m = time.monotonic()
            if now_m >= next_report:
                window_end = self.clock()
                self._report(window_start, window_end)
                window_start = window_end
                next_report += self.report_interval_s
                if next_report < now_m:  # fell behind (suspended, overloaded): resync
                    next_report = now_m + self.report_interval_s
            if next_sample < now_m:
                next_sample = now_m
            halt.wait(max(0.0, next_sample - now_m))
        if len(self._agg):
            self._report(window_start, self.clock())

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

    def _report(self, window_start: float, window_end: float) -> None:
        """Attribute, close, number and spool the window (in the sampling thread), and wake
        the streaming thread."""
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
        seq = self.spool.next_seq()
        report = NodeReport(
            node=self.node,
            seq=seq,
            window_start=window_start,
            window_end=window_end,
            gpus=self._agg.flush(attribution.gpus),
            slurm=attribution.slurm,
            agent_version=gpuwarden.__version__,
        )
        self._reports += 1
        data = report_to_pb(report).SerializeToString()
        if self.spool.put(seq, data):
            self.streamer.offer(seq, data)


def _resolve(future: asyncio.Future[BaseException | None], error: BaseException | None) -> None:
    if not future.done():
        future.set_result(error)
