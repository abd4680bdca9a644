"""A profiling field added in the sampler alone reaches the store and the query API."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gpuwarden.collector.server import Collector
from gpuwarden.common.types import GpuSample
from gpuwarden.query import QueryClient
from gpuwarden.sim import SimAttributor, SimNode, SimSampler
from tests.helpers import running_agent, wait_for


class SmActivitySampler(SimSampler):
    """The simulator plus an SM-activity counter on GPU 0 only (as GPM would give on a
    card that has it): the one place a new field is written."""

    def sample(self, now: float) -> list[GpuSample]:
        out = super().sample(now)
        return [replace(s, extra={"sm_active_pct": 33.0}) if s.index == 0 else s for s in out]


async def test_field_from_the_sampler_is_stored_and_queryable(
    collector: Collector, tmp_path: Path
) -> None:
    node = SimNode("gpu01", gpus=2, seed=0)
    async with (
        running_agent(
            collector,
            tmp_path / "spool",
            node="gpu01",
            sampler=SmActivitySampler(node),
            attributor=SimAttributor(node),
        ),
        QueryClient(f"127.0.0.1:{collector.port}") as client,
    ):
        await wait_for(lambda: collector.store.count_windows() >= 4)
        snap = await client.snapshot()
        history = await client.history(node="gpu01")
    latest = {g.latest.index: g.latest for n in snap.nodes for g in n.gpus}
    assert dict(latest[0].extra_mean) == {"sm_active_pct": 33.0}
    assert dict(latest[1].extra_mean) == {}  # a GPU without the counter: absent, not 0
    by_index = {w.gpu.index: w.gpu for w in history.windows}
    assert dict(by_index[0].extra_max) == {"sm_active_pct": 33.0}
    assert "sm_active_pct" not in by_index[1].extra_max
