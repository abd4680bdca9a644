"""A collector on a simulated clock, a month of history: retention prunes raw windows and
1-minute roll-ups in small steps, and the query API (what ``jobstats`` and the CLI read)
still answers a month-old job from the 1-hour roll-ups, over real gRPC."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.collector.retention import DAY, Retention
from gpuwarden.collector.server import Collector
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport
from gpuwarden.query import QueryClient

T0 = 1_780_000_000.0 - (1_780_000_000.0 % 3600)


async def test_a_month_old_job_is_answered_from_hourly_rollups(tmp_path: Path) -> None:
    now = [T0]
    collector = Collector(
        db_path=tmp_path / "db",
        listen="127.0.0.1:0",
        retention=Retention(raw_s=2 * DAY, rollup_1m_s=7 * DAY, prune_batch=1000),
        clock=lambda: now[0],
    )
    await collector.start()
    try:
        job = JobInfo(job_id="31337", user="alice", account="physics", partition="gpu")
        utils: list[float] = []
        seq = 0
        step = 600.0  # 10-minute windows keep a month small
        while now[0] < T0 + 30 * DAY:
            batch = []
            for _ in range(6):
                seq += 1
                in_job = now[0] < T0 + 2 * DAY  # the job ran for the first two days
                util = float(seq % 97)
                if in_job:
                    utils.append(util)
                g = GpuWindow(
                    uuid="GPU-7",
                    index=0,
                    samples=120,
                    util_mean=util,
                    util_max=util,
                    job=job if in_job else None,
                    allocated=in_job,
                )
                batch.append(NodeReport("gpu07", seq, now[0], now[0] + step, (g,)))
                now[0] += step
            collector.store.write_reports(batch, now[0])
            while collector.store.prune_step():  # the collector's housekeeping
                pass
        async with QueryClient(f"127.0.0.1:{collector.port}") as client:
            page = await client.history(job_id="31337")
            recent = await client.history(node="gpu07", since=now[0] - 3600)
    finally:
        await collector.stop()
    assert not page.truncated
    assert len(page.windows) == 48  # one per hour of the job's two days
    assert all(w.window_end - w.window_start <= 3600 for w in page.windows)
    assert sum(w.gpu.samples for w in page.windows) == 120 * len(utils)
    mean = sum((w.gpu.util_mean or 0.0) * w.gpu.samples for w in page.windows) / sum(
        w.gpu.samples for w in page.windows
    )
    assert mean == pytest.approx(sum(utils) / len(utils))
    assert max(w.gpu.util_max or 0.0 for w in page.windows) == max(utils)
    assert {w.gpu.job.user for w in page.windows if w.gpu.job} == {"alice"}
    # the last hour is still raw: 10-minute windows, as the agent sent them
    assert [w.window_end - w.window_start for w in recent.windows] == [step] * 7
    assert collector.store.count_windows() <= 2 * DAY / step + 6
