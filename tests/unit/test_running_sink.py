"""The sink wrapper: batching, retry, the bounded on-disk backlog and the drop counts, with a
sink that fails on purpose (failure injection: the wrapper is what is under test)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from gpuwarden.collector.outputs.running import RunningSink, SinkSettings
from gpuwarden.common.types import GpuWindow, WindowRecord
from tests.helpers import wait_for_sync

FAST = SinkSettings(
    batch_max=10,
    flush_interval=0.01,
    retry_initial=0.01,
    retry_max_backoff=0.05,
    backlog_max_windows=1000,
)


class FlakySink:
    """Records what it was given; raises while ``down`` is set; may block on ``gate``."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.delivered: list[int] = []  # window_start of every window taken, in order
        self.opens = 0
        self.closes = 0

    def open(self) -> None:
        if self.down.is_set():
            raise ConnectionRefusedError("sink is down")
        self.opens += 1

    def write(self, batch: Sequence[WindowRecord]) -> None:
        self.gate.wait()
        if self.down.is_set():
            raise ConnectionResetError("sink went away")
        self.delivered.extend(int(r.window_start) for r in batch)

    def close(self) -> None:
        self.closes += 1


def windows(start: int, n: int) -> list[WindowRecord]:
    return [
        WindowRecord(
            node="gpu01",
            window_start=float(i),
            window_end=float(i) + 5,
            gpu=GpuWindow(uuid="GPU-a", index=0, samples=5, util_max=float(i % 100)),
        )
        for i in range(start, start + n)
    ]


@pytest.fixture
def sink() -> FlakySink:
    return FlakySink()


@pytest.fixture
def running(sink: FlakySink, tmp_path: Path) -> Iterator[RunningSink]:
    rs = RunningSink("test", sink, FAST, tmp_path / "backlog")
    rs.start()
    yield rs
    sink.gate.set()
    rs.stop()


def test_windows_reach_the_sink_in_order(running: RunningSink, sink: FlakySink) -> None:
    for k in range(5):
        assert running.offer(windows(k * 7, 7))
    wait_for_sync(lambda: len(sink.delivered) == 35)
    assert sink.delivered == list(range(35))
    stats = running.stats()
    assert stats.delivered == 35 and stats.backlog == 0 and stats.healthy


def test_outage_then_recovery_drains_the_backlog_nothing_lost_nothing_twice(
    running: RunningSink, sink: FlakySink, tmp_path: Path
) -> None:
    running.offer(windows(0, 10))
    wait_for_sync(lambda: len(sink.delivered) == 10)
    sink.down.set()
    for k in range(1, 20):
        running.offer(windows(k * 10, 10))
    wait_for_sync(lambda: running.stats().backlog == 190)
    during = running.stats()
    assert during.failures >= 1 and not during.healthy and "Connection" in during.last_error
    assert len(list((tmp_path / "backlog").glob("*.pb"))) >= 1  # kept on disk
    sink.down.clear()
    running.offer(windows(200, 10))  # arrives while the backlog drains: goes behind it
    wait_for_sync(lambda: len(sink.delivered) == 210)
    assert sink.delivered == list(range(210))
    after = running.stats()
    assert after.backlog == 0 and after.dropped_backlog == 0 and after.dropped_queue_full == 0
    assert after.healthy and after.delivered == 210
    assert list((tmp_path / "backlog").glob("*.pb")) == []


def test_beyond_the_bound_the_oldest_windows_are_dropped_and_counted(
    sink: FlakySink, tmp_path: Path
) -> None:
    settings = replace(FAST, backlog_max_windows=50)
    sink.down.set()
    rs = RunningSink("bounded", sink, settings, tmp_path / "backlog")
    rs.start()
    try:
        for k in range(8):  # 80 windows into a backlog of 50
            rs.offer(windows(k * 10, 10))
        wait_for_sync(lambda: rs.stats().dropped_backlog == 30)
        assert rs.stats().backlog == 50
        sink.down.clear()
        wait_for_sync(lambda: len(sink.delivered) == 50)
        assert sink.delivered == list(range(30, 80))  # the newest 50 survive, in order
        assert rs.stats().dropped_backlog == 30
    finally:
        rs.stop()


def test_a_restart_with_a_backlog_on_disk_delivers_it(sink: FlakySink, tmp_path: Path) -> None:
    sink.down.set()
    first = RunningSink("restart", sink, FAST, tmp_path / "backlog")
    first.start()
    first.offer(windows(0, 25))
    wait_for_sync(lambda: first.stats().failures >= 1)
    first.offer(windows(25, 5))  # still queued in memory at stop: kept on disk too
    first.stop()
    assert sink.delivered == []
    fresh = FlakySink()
    second = RunningSink("restart", fresh, FAST, tmp_path / "backlog")
    assert second.stats().backlog == 30
    second.start()
    try:
        wait_for_sync(lambda: len(fresh.delivered) == 30)
        assert fresh.delivered == list(range(30))
    finally:
        second.stop()


def test_a_stuck_sink_never_blocks_the_offer_and_a_full_queue_is_counted(
    sink: FlakySink, tmp_path: Path
) -> None:
    settings = SinkSettings(batch_max=10, flush_interval=0.01, queue_max=30)
    sink.gate.clear()  # the first write hangs (a database that stopped answering)
    rs = RunningSink("stuck", sink, settings, tmp_path / "backlog")
    rs.start()
    try:
        rs.offer(windows(0, 10))
        wait_for_sync(lambda: rs.stats().queued == 0)  # taken by the hanging write
        accepted = [rs.offer(windows(10 + k * 10, 10)) for k in range(5)]
        assert accepted == [True, True, True, False, False]
        assert rs.stats().dropped_queue_full == 20
        sink.gate.set()
        wait_for_sync(lambda: len(sink.delivered) == 40)
        assert sink.delivered == list(range(40))
    finally:
        sink.gate.set()
        rs.stop()


def test_stop_hands_queued_windows_to_a_healthy_sink(sink: FlakySink, tmp_path: Path) -> None:
    settings = SinkSettings(batch_max=1000, flush_interval=3600.0)
    rs = RunningSink("flush", sink, settings, tmp_path / "backlog")
    rs.start()
    rs.offer(windows(0, 12))  # not due yet: waits for a full batch or the interval
    rs.stop()
    assert sink.delivered == list(range(12))
    assert sink.closes == 1
