"""The agent samples in its own thread: what happens to the agent when that thread ends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gpuwarden.agent.attribution import NoAttribution
from gpuwarden.agent.nvml import NvmlSampler
from gpuwarden.agent.runtime import Agent
from gpuwarden.agent.spool import Spool
from gpuwarden.collector.server import Collector
from gpuwarden.common.types import GpuSample
from tests.fakenvml import FakeNvmlState
from tests.helpers import wait_for


class SamplerDied(BaseException):
    """Not an Exception: nothing in the sampling loop may swallow it."""


class DyingSampler(NvmlSampler):
    """The real NVML sampler over the fake library, until its ``last`` sample."""

    def __init__(self, last: int) -> None:
        super().__init__()
        self.left = last

    def sample(self, now: float) -> list[GpuSample]:
        if self.left == 0:
            raise SamplerDied("sampling thread ended")
        self.left -= 1
        return super().sample(now)


def agent_on(collector: Collector, spool: Spool, sampler: NvmlSampler, interval_s: float) -> Agent:
    """An agent sampling every ``interval_s`` and reporting every 4 samples."""
    return Agent(
        node="n1",
        sampler=sampler,
        attributor=NoAttribution(),
        spool=spool,
        collector=f"127.0.0.1:{collector.port}",
        sample_interval_s=interval_s,
        report_interval_s=interval_s * 4,
    )


async def test_agent_run_ends_with_the_error_that_ended_its_sampling_thread(
    collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    agent = agent_on(collector, spool, DyingSampler(last=20), 0.05)
    run = asyncio.create_task(agent.run(asyncio.Event()))  # nobody sets stop
    with pytest.raises(SamplerDied):
        await asyncio.wait_for(run, 15)
    stats = agent.stats()
    assert stats.samples == 20 and stats.reports >= 1
    # every report it made was delivered or waits in the spool for the next start
    assert collector.store.count_reports() + len(spool) >= stats.reports


async def test_reports_of_the_sampling_thread_are_numbered_in_order_and_all_stored(
    collector: Collector, fake_nvml: FakeNvmlState, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    agent = agent_on(collector, spool, NvmlSampler(), 0.02)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    await wait_for(lambda: agent.stats().acked >= 10, 20)
    stop.set()
    await asyncio.wait_for(run, 15)
    stats = agent.stats()
    assert stats.reports == collector.store.count_reports()  # the last window too
    assert stats.spooled == 0 and stats.dropped == 0
