"""Roll-ups and retention in the real SQLite store: a simulated month on an injected clock,
history answering from the resolution that fits, pruning in small batches."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gpuwarden.collector.retention import DAY, RAW, Retention
from gpuwarden.collector.store import Store
from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport

T0 = 1_700_000_000.0 - (1_700_000_000.0 % 3600)  # on the hour


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def gpu(i: int, util: float | None, job: str | None, samples: int = 5) -> GpuWindow:
    return GpuWindow(
        uuid=f"GPU-{i}",
        index=i,
        name="A100",
        samples=samples,
        util_mean=util,
        util_max=None if util is None else util + 1,
        util_min=None if util is None else max(0.0, util - 1),
        mem_used_max_bytes=1 << 30,
        mem_total_bytes=80 << 30,
        power_mean_w=None if util is None else 100 + util,
        temperature_c=40.0,
        job=JobInfo(job_id=job, user="alice", account="physics", partition="gpu") if job else None,
        allocated=job is not None,
    )


def test_a_bucket_mean_is_sample_weighted_and_missing_values_count_for_nothing(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "db")
    store.write_reports(
        [
            NodeReport("n1", 1, T0, T0 + 10, (gpu(0, 90.0, "7", samples=10),)),
            NodeReport("n1", 2, T0 + 10, T0 + 15, (gpu(0, 30.0, "7", samples=5),)),
            NodeReport("n1", 3, T0 + 15, T0 + 20, (gpu(0, None, "7"),)),
        ],
        0,
    )
    minute, truncated = store.history(job_id="7", resolution=60)
    assert not truncated and len(minute) == 1
    g = minute[0].gpu
    assert g.util_mean == pytest.approx((90 * 10 + 30 * 5) / 15)
    assert g.util_max == 91.0 and g.util_min == 29.0
    assert g.samples == 20
    assert g.power_mean_w == pytest.approx((190 * 10 + 130 * 5) / 15)
    assert g.job == JobInfo(job_id="7", user="alice", account="physics", partition="gpu")
    assert (minute[0].window_start, minute[0].window_end) == (T0, T0 + 20)
    # a bucket with no utilisation at all is unknown, not 0
    store.write_reports([NodeReport("n1", 4, T0 + 600, T0 + 605, (gpu(0, None, "8"),))], 0)
    (unknown,), _ = store.history(job_id="8", resolution=3600)
    assert unknown.gpu.util_mean is None and unknown.gpu.util_max is None


def test_a_late_window_lands_in_its_own_bucket(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    store.write_reports([NodeReport("n1", 2, T0 + 3600, T0 + 3605, (gpu(0, 10.0, "7"),))], 0)
    # an agent's spool replayed after an outage: an hour-old window arrives afterwards
    store.write_reports([NodeReport("n1", 1, T0, T0 + 5, (gpu(0, 50.0, "7"),))], 0)
    hours, _ = store.history(job_id="7", resolution=3600)
    assert [(r.window_start, r.gpu.util_mean) for r in hours] == [(T0, 50.0), (T0 + 3600, 10.0)]
    # a duplicate (same node, seq) changes no roll-up
    store.write_reports([NodeReport("n1", 1, T0, T0 + 5, (gpu(0, 50.0, "7"),))], 0)
    assert store.history(job_id="7", resolution=3600)[0] == hours


def test_a_simulated_month_keeps_raw_minutes_and_hours_for_their_retention(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    retention = Retention(raw_s=3 * DAY, rollup_1m_s=10 * DAY, prune_batch=500)
    store = Store(tmp_path / "db", retention=retention, clock=clock)
    step = 300.0  # 5-minute report windows keep the month small enough for a unit test
    written: dict[str, list[float]] = {"early": [], "late": []}
    seq = 0
    deleted_per_step: list[int] = []
    while clock.t < T0 + 30 * DAY:
        hour: list[NodeReport] = []  # the collector's group commit: an hour per transaction
        for _ in range(int(3600 / step)):
            seq += 1
            job = "early" if clock.t - T0 < 5 * DAY else "late"
            util = float((seq * 7) % 100)
            written[job].append(util)
            gpus = (gpu(0, util, job), gpu(1, None, None))
            hour.append(NodeReport("n1", seq, clock.t, clock.t + step, gpus))
            clock.t += step
        store.write_reports(hour, 0)
        if clock.t % DAY == 0 or clock.t >= T0 + 30 * DAY:  # housekeeping, daily and at the end
            while n := store.prune_step():
                deleted_per_step.append(n)
    now = clock.t
    # small transactions only: at most prune_batch windows and as many report keys
    assert deleted_per_step and max(deleted_per_step) <= 2 * 500

    raw, _ = store.history(node="n1", resolution=RAW, limit=100_000)
    assert min(r.window_end for r in raw) >= now - 3 * DAY
    minutes, _ = store.history(node="n1", resolution=60, limit=100_000)
    assert min(r.window_end for r in minutes) >= now - 10 * DAY - 60
    hours, _ = store.history(node="n1", resolution=3600, limit=100_000)
    assert min(r.window_start for r in hours) == T0  # the whole month, by the hour

    # the early job's raw windows and minutes are gone: its history comes from the hours,
    # and its mean utilisation is still the mean of what the agents reported
    assert store.resolution_for("", "", "early", 0.0, None) == 3600
    early, truncated = store.history(job_id="early")
    assert not truncated and {r.gpu.job.job_id for r in early if r.gpu.job} == {"early"}
    mean = sum(r.gpu.util_mean * r.gpu.samples for r in early if r.gpu.util_mean) / sum(
        r.gpu.samples for r in early
    )
    assert mean == pytest.approx(sum(written["early"]) / len(written["early"]))
    assert sum(r.gpu.samples for r in early) == 5 * len(written["early"])

    # short recent ranges read raw windows, a few days read minutes
    assert store.resolution_for("n1", "", "", now - 3600, None) == RAW
    recent, _ = store.history(node="n1", since=now - 3600)  # window_end >= since: 13 each
    assert len(recent) == 2 * 13 and all(r.window_end - r.window_start == step for r in recent)
    assert store.resolution_for("n1", "", "", now - 2 * DAY, None) == 60
    assert store.resolution_for("n1", "", "", now - 20 * DAY, None) == 3600

    # retention survives a restart: the store still knows what it pruned
    store.close()
    again = Store(tmp_path / "db", retention=retention, clock=clock)
    assert again.resolution_for("", "", "early", 0.0, None) == 3600


def test_pruning_a_large_backlog_lets_writes_through_between_batches(tmp_path: Path) -> None:
    store = Store(tmp_path / "db", retention=Retention(raw_s=DAY, prune_batch=200))
    reports = [
        NodeReport("old", i, T0 + 5 * i, T0 + 5 * i + 5, (gpu(0, 1.0, "1"), gpu(1, 2.0, "1")))
        for i in range(1, 5001)
    ]
    store.write_reports(reports, 0)
    events: list[str] = []
    pruning = threading.Event()

    def prune() -> None:  # as the collector's housekeeping: a short pause between steps
        while store.prune_step(now=T0 + 30 * DAY):
            events.append("prune")
            pruning.set()
            time.sleep(0.01)
        events.append("pruned")

    t = threading.Thread(target=prune)
    t.start()
    pruning.wait()
    for i in range(1, 6):
        store.write_reports([NodeReport("new", i, T0 + 30 * DAY, T0 + 30 * DAY + 5)], 0)
        events.append("write")
    t.join()
    assert events.count("prune") >= 50  # 10,000 windows + 5,000 report keys, 200 at a time
    assert events.index("write") < events.index("pruned")  # a write did not wait for it all
    assert store.count_windows() == 0 and store.count_reports() == 5


def test_without_rollups_history_is_raw_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "db", retention=Retention(rollups=False, raw_s=3600))
    store.write_reports([NodeReport("n1", 1, T0, T0 + 5, (gpu(0, 10.0, "7"),))], 0)
    assert store.history(job_id="7", resolution=3600)[0] == []
    assert len(store.history(job_id="7")[0]) == 1
    assert store.prune_step(now=T0 + 7200) == 2  # the window and its report key


def test_a_raw_retention_shorter_than_the_rules_look_back_is_refused() -> None:
    from gpuwarden.collector.config import CollectorConfig
    from gpuwarden.collector.main import check_retention
    from gpuwarden.collector.policy import Policy, PolicySet
    from gpuwarden.common.config import ConfigError

    policies = PolicySet(partitions={"long": Policy(idle_window=7200.0)})
    check_retention(CollectorConfig(insecure=True, retention=3 * 3600.0), policies)
    with pytest.raises(ConfigError, match=r"\[collector\] retention: 3600 s is shorter"):
        check_retention(CollectorConfig(insecure=True, retention=3600.0), policies)
