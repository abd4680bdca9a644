"""Sinks on the live collector: agents -> gRPC -> SQLite -> every window in the sink, and a
sink that hangs never holds up ingestion or acks."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import orjson

from gpuwarden.collector.outputs.config import load_outputs
from gpuwarden.collector.outputs.exporter import Exporter, LiveView
from gpuwarden.collector.outputs.running import RunningSink, SinkSet, SinkSettings
from gpuwarden.collector.server import Collector
from gpuwarden.collector.store import Store
from gpuwarden.common.types import WindowRecord
from tests.helpers import sim_agent, wait_for


async def test_every_stored_window_reaches_the_jsonl_sink_once(tmp_path: Path) -> None:
    conf = tmp_path / "collector.toml"
    conf.write_text('[sinks.archive]\ntype = "jsonl"\nflush_interval = "0.05s"\n')
    state = tmp_path / "state"
    outputs = load_outputs(conf, state)
    collector = Collector(db_path=state / "db.sqlite", listen="127.0.0.1:0", sinks=outputs.sinks)
    await collector.start()
    try:
        async with sim_agent(collector, tmp_path, "gpu01"), sim_agent(collector, tmp_path, "gpu02"):
            await wait_for(lambda: collector.store.count_windows() >= 12)
    finally:
        await collector.stop()  # the sink gets what is still queued
    lines = [orjson.loads(x) for x in (state / "archive.jsonl").read_bytes().splitlines()]
    in_sink = sorted((x["node"], x["gpu"]["uuid"], x["window_end"]) for x in lines)
    store = Store(state / "db.sqlite")
    stored = [
        (r.node, r.gpu.uuid, r.window_end)
        for node in ("gpu01", "gpu02")
        for r in store.history(node=node)[0]
    ]
    store.close()
    assert in_sink == sorted(stored)
    assert len(set(in_sink)) == len(in_sink)
    assert {x["gpu"]["job"]["source"] for x in lines if x["gpu"]["job"]} == {"sim"}


class HangingSink:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.got = 0

    def open(self) -> None:
        pass

    def write(self, batch: Sequence[WindowRecord]) -> None:
        self.release.wait()
        self.got += len(batch)

    def close(self) -> None:
        pass


async def test_a_hanging_sink_does_not_hold_up_ingest_or_acks(tmp_path: Path) -> None:
    hanging = HangingSink()
    running = RunningSink(
        "hang", hanging, SinkSettings(batch_max=2, flush_interval=0.01), tmp_path / "backlog"
    )
    collector = Collector(
        db_path=tmp_path / "db.sqlite", listen="127.0.0.1:0", sinks=SinkSet([running])
    )
    await collector.start()
    try:
        async with sim_agent(collector, tmp_path) as agent:
            await wait_for(lambda: agent.stats().acked >= 10)
        assert hanging.got == 0  # the sink took nothing, yet reports were stored and acked
        assert running.stats().queued > 0
        hanging.release.set()
        await wait_for(lambda: running.stats().queued == 0 and hanging.got > 0)
    finally:
        hanging.release.set()
        await collector.stop()
    assert hanging.got == collector.ingestor.stored * 2  # two GPUs per report, all delivered


class GpuCountExporter:
    """A minimal exporter over the seam: what a scrape would read, rendered when asked."""

    content_type = "text/plain"

    def render(self, view: LiveView) -> bytes:
        gpus = sum(len(n.gpus) for n in view.state.nodes())
        backlog = sum(s.backlog for s in view.sinks)
        return f"gpus {gpus}\nsink_backlog {backlog}\n".encode()


async def test_an_exporter_renders_the_live_state_at_scrape_time(tmp_path: Path) -> None:
    collector = Collector(db_path=tmp_path / "db.sqlite", listen="127.0.0.1:0")
    await collector.start()
    exporter: Exporter = GpuCountExporter()
    try:
        assert exporter.render(collector.live_view()) == b"gpus 0\nsink_backlog 0\n"
        async with sim_agent(collector, tmp_path, "gpu01"), sim_agent(collector, tmp_path, "gpu02"):
            await wait_for(lambda: len(collector.state.nodes()) == 2)
        assert exporter.render(collector.live_view()) == b"gpus 4\nsink_backlog 0\n"
    finally:
        await collector.stop()
