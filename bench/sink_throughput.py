#!/usr/bin/env python3
"""Sink wrapper figures: what an offer costs the ingest path, how fast the jsonl sink takes
windows, how fast an outage spills to the on-disk backlog and how fast it drains after.

    .venv/bin/python bench/sink_throughput.py --windows 100000 --per-offer 64
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from gpuwarden.collector.outputs.jsonl import JsonlSink
from gpuwarden.collector.outputs.running import RunningSink, SinkSettings
from gpuwarden.common.types import GpuWindow, JobInfo, WindowRecord


class Switchable:
    """The jsonl sink behind a switch, to time an outage and its recovery."""

    def __init__(self, inner: JsonlSink) -> None:
        self.inner = inner
        self.up = threading.Event()
        self.up.set()

    def open(self) -> None:
        if not self.up.is_set():
            raise ConnectionRefusedError("down")
        self.inner.open()

    def write(self, batch: Sequence[WindowRecord]) -> None:
        if not self.up.is_set():
            raise ConnectionRefusedError("down")
        self.inner.write(batch)

    def close(self) -> None:
        self.inner.close()


def records(n: int) -> list[WindowRecord]:
    job = JobInfo(job_id="1234", user="alice", account="a", partition="gpu", source="sim")
    return [
        WindowRecord(
            node=f"gpu{i % 64:02d}",
            window_start=1.7e9 + i,
            window_end=1.7e9 + i + 5,
            gpu=GpuWindow(
                uuid=f"GPU-{i % 512}",
                index=i % 8,
                samples=5,
                util_mean=50.0,
                util_max=90.0,
                mem_used_max_bytes=1 << 34,
                power_mean_w=300.0,
                job=job,
                allocated=True,
                extra_mean={"sm_active_pct": 40.0},
                extra_max={"sm_active_pct": 70.0},
            ),
        )
        for i in range(n)
    ]


def wait(pred: object, timeout_s: float = 600.0) -> None:
    end = time.monotonic() + timeout_s
    while not pred():  # type: ignore[operator]
        if time.monotonic() > end:
            raise SystemExit("timed out")
        time.sleep(0.005)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--windows", type=int, default=100_000)
    ap.add_argument("--per-offer", type=int, default=64, help="windows per group commit")
    args = ap.parse_args()
    data = records(args.windows)
    chunks = [data[i : i + args.per_offer] for i in range(0, len(data), args.per_offer)]
    settings = SinkSettings(queue_max=len(data) + 1, retry_initial=0.05, retry_max_backoff=0.05)
    with tempfile.TemporaryDirectory() as tmp:
        sink = Switchable(JsonlSink(Path(tmp) / "w.jsonl", max_bytes=1 << 30))
        rs = RunningSink("bench", sink, settings, Path(tmp) / "backlog")
        rs.start()

        t0 = time.perf_counter()
        for c in chunks:
            rs.offer(c)
        offer_s = time.perf_counter() - t0
        wait(lambda: rs.stats().delivered == len(data))
        healthy_s = time.perf_counter() - t0
        size = (Path(tmp) / "w.jsonl").stat().st_size
        print(f"offer: {offer_s / len(chunks) * 1e6:.1f} us per offer of {args.per_offer} windows")
        print(
            f"healthy jsonl: {len(data) / healthy_s:,.0f} windows/s ({size / len(data):.0f} B/line)"
        )

        sink.up.clear()
        t1 = time.perf_counter()
        for c in chunks:
            rs.offer(c)
        wait(lambda: rs.stats().backlog == len(data))
        spill_s = time.perf_counter() - t1
        backlog_bytes = sum(p.stat().st_size for p in (Path(tmp) / "backlog").iterdir())
        print(
            f"outage: {len(data) / spill_s:,.0f} windows/s to the backlog "
            f"({backlog_bytes / len(data):.0f} B/window on disk, {len(rs.backlog)} files)"
        )
        sink.up.set()
        t2 = time.perf_counter()
        wait(lambda: rs.stats().delivered == 2 * len(data))
        print(
            f"recovery: backlog drained at {len(data) / (time.perf_counter() - t2):,.0f} windows/s"
        )
        rs.stop()


if __name__ == "__main__":
    main()
