"""The agent's main loop: sample every ``sample_interval``, report every ``report_interval``.

Sampling and attribution are blocking calls (NVML, /proc, scontrol) and run in a worker
thread so the gRPC stream keeps flowing. Each report is written to the spool before it is
sent; the streamer deletes it when the collector acks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

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
        """Run until ``stop`` is set (or the task is cancelled); flushes the last window."""
        stop = stop or asyncio.Event()
        await asyncio.to_thread(self.sampler.open)
        streamer = asyncio.create_task(self.streamer.run(), name=f"stream-{self.node}")
        try:
            await self._loop(stop)
            await self._drain()
        finally:
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

    async def _loop(self, stop: asyncio.Event) -> None:
        window_start = self.clock()
        next_sample = time.monotonic()
        next_report = next_sample + self.report_interval_s
        while not stop.is_set():
            await self._sample_once()
            next_sample += self.sample_interval_s
            now_m = time.monotonic()
            if now_m >= next_report:
                window_end = self.clock()
                await self._report(window_start, window_end)
                window_start = window_end
                next_report += self.report_interval_s
                if next_report < now_m:  # fell behind (suspended, overloaded): resync
                    next_report = now_m + self.report_interval_s
            if next_sample < now_m:
                next_sample = now_m
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_sample - now_m))
        if len(self._agg):
            await self._report(window_start, self.clock())

    async def _sample_once(self) -> None:
        try:
            samples = await asyncio.to_thread(self.sampler.sample, self.clock())
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

    async def _report(self, window_start: float, window_end: float) -> None:
        if not len(self._agg):
            return
        merged = self._agg.merged_samples()
        try:
            attribution = await asyncio.to_thread(self.attributor.attribute, merged)
        except Exception as exc:  # an attributor must not raise; never lose GPU data if it does
            log.exception("attribution failed")
            attribution = Attribution(slurm=SlurmStatus(available=False, error=str(exc)))
        if attribution.slurm != self._last_slurm:
            log.info("slurm status: %s", attribution.slurm)
            self._last_slurm = attribution.slurm
        report = NodeReport(
            node=self.node,
            seq=self.spool.next_seq(),
            window_start=window_start,
            window_end=window_end,
            gpus=self._agg.flush(attribution.gpus),
            slurm=attribution.slurm,
            agent_version=gpuwarden.__version__,
        )
        data = report_to_pb(report).SerializeToString()
        self._reports += 1
        # in the loop thread: the streamer shares the spool
        if self.spool.put(report.seq, data):
            self.streamer.notify_new_report()
