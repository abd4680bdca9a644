"""The ``influxdb`` sink against a real line-protocol server (Debian's victoria-metrics):
agents -> gRPC -> SQLite -> influxdb-client -> VictoriaMetrics, the same windows in both,
and an outage of the server mid-run with nothing lost and the backlog drained."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.collector.outputs.config import load_outputs
from gpuwarden.collector.server import Collector
from gpuwarden.collector.store import Store
from tests.exportsvc import VictoriaMetrics
from tests.helpers import sim_agent, wait_for, wait_for_sync

Key = tuple[str, str, int]  # node, uuid, window end in ms


def influx_collector(tmp_path: Path, vm: VictoriaMetrics) -> Collector:
    conf = tmp_path / "collector.toml"
    conf.write_text(
        "[sinks.tsdb]\n"
        'type = "influxdb"\n'
        f'url = "{vm.url}"\n'
        'bucket = "gpuwarden"\n'
        'cluster = "testcluster"\n'
        'flush_interval = "0.05s"\n'
        'retry_initial = "0.1s"\n'
        'retry_max_backoff = "0.5s"\n'
        'timeout = "2s"\n'
    )
    state = tmp_path / "state"
    outputs = load_outputs(conf, state)
    return Collector(db_path=state / "db.sqlite", listen="127.0.0.1:0", sinks=outputs.sinks)


def stored(tmp_path: Path, nodes: tuple[str, ...]) -> dict[Key, tuple[float | None, int | None]]:
    store = Store(tmp_path / "state" / "db.sqlite")
    try:
        return {
            (r.node, r.gpu.uuid, round(r.window_end * 1000)): (
                r.gpu.util_mean,
                r.gpu.mem_used_max_bytes,
            )
            for node in nodes
            for r in store.history(node=node, resolution=0, limit=100_000)[0]
        }
    finally:
        store.close()


def exported(vm: VictoriaMetrics, field: str) -> dict[Key, list[float]]:
    """Every sample VictoriaMetrics holds for ``gpuwarden_gpu_<field>``, by window; a list,
    so a window written twice would show."""
    out: dict[Key, list[float]] = {}
    for series in vm.export(f'{{__name__="gpuwarden_gpu_{field}",cluster="testcluster"}}'):
        m = series["metric"]
        for ts, value in zip(series["timestamps"], series["values"], strict=True):
            out.setdefault((m["node"], m["uuid"], int(ts)), []).append(float(value))
    return out


def readable(vm: VictoriaMetrics, keys: set[Key]) -> dict[Key, list[float]]:
    """The ``samples`` series once VictoriaMetrics shows every window of ``keys`` (its
    newest rows become searchable a moment after the write)."""
    got: dict[Key, list[float]] = {}

    def complete() -> bool:
        got.clear()
        got.update(exported(vm, "samples"))
        return set(got) >= keys

    wait_for_sync(complete, timeout_s=15)
    assert set(got) == keys
    return got


async def test_the_same_windows_are_in_sqlite_and_in_victoriametrics(
    tmp_path: Path, victoria_metrics: VictoriaMetrics
) -> None:
    collector = influx_collector(tmp_path, victoria_metrics)
    await collector.start()
    try:
        async with (
            sim_agent(collector, tmp_path, "gpu01"),
            sim_agent(collector, tmp_path, "gpu02"),
        ):
            await wait_for(lambda: collector.store.count_windows() >= 40)
    finally:
        await collector.stop()
    in_sqlite = stored(tmp_path, ("gpu01", "gpu02"))
    assert len(in_sqlite) >= 40
    samples = readable(victoria_metrics, set(in_sqlite))
    assert all(len(v) == 1 for v in samples.values())  # each window once
    util = exported(victoria_metrics, "util_mean")
    mem = exported(victoria_metrics, "mem_used_max_bytes")
    for key, (util_mean, mem_used) in in_sqlite.items():
        # VictoriaMetrics keeps about 12 significant digits
        expected = [pytest.approx(util_mean, rel=1e-9)] if util_mean is not None else None
        assert util.get(key) == expected
        assert mem.get(key) == ([float(mem_used)] if mem_used is not None else None)
    # tags: job identity as labels, queryable with PromQL
    series = victoria_metrics.export('{__name__="gpuwarden_gpu_util_mean"}')
    labels = {k for s in series for k in s["metric"]}
    assert {"cluster", "node", "uuid", "index", "name", "job", "user", "account"} <= labels
    by_node = victoria_metrics.query(
        'count by (node) (count_over_time(gpuwarden_gpu_samples{cluster="testcluster"}[1h]))'
    )
    assert {r["metric"]["node"]: r["value"][1] for r in by_node} == {"gpu01": "2", "gpu02": "2"}


async def test_a_victoriametrics_outage_loses_nothing_and_the_backlog_drains(
    tmp_path: Path, victoria_metrics: VictoriaMetrics
) -> None:
    collector = influx_collector(tmp_path, victoria_metrics)
    await collector.start()

    try:
        async with sim_agent(collector, tmp_path, "gpu01"):
            await wait_for(lambda: collector.sinks.stats()[0].delivered >= 10)
            victoria_metrics.stop()
            stored_at_outage = collector.store.count_windows()
            # ingest goes on; the sink keeps what it cannot deliver on disk
            await wait_for(lambda: collector.sinks.stats()[0].backlog >= 20)
            await wait_for(lambda: collector.store.count_windows() >= stored_at_outage + 20)
            during = collector.sinks.stats()[0]
            assert not during.healthy and during.failures >= 1
            victoria_metrics.start()
            await wait_for(lambda: collector.sinks.stats()[0].backlog == 0, timeout_s=30)
            await wait_for(lambda: collector.sinks.stats()[0].healthy)
    finally:
        await collector.stop()
    after = collector.sinks.stats()[0]
    assert after.dropped_backlog == 0 and after.dropped_queue_full == 0
    in_sqlite = stored(tmp_path, ("gpu01",))
    samples = readable(victoria_metrics, set(in_sqlite))  # nothing lost
    assert all(len(v) == 1 for v in samples.values())  # nothing written twice
    assert after.delivered == len(in_sqlite)
