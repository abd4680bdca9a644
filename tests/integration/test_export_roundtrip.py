"""``gpuwarden export`` -> ``gpuwarden replay`` round trip: a demo run (real collector, real
gRPC, simulated nodes), exported from its database and replayed with the demo's policy, gives
the decisions the demo's collector audited."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gpuwarden.cli import main as gpuwarden
from gpuwarden.collector.audit import record_from_event
from gpuwarden.collector.policy import PolicySet
from gpuwarden.collector.replay import replay_lines
from gpuwarden.demo import DemoOptions, demo_policy, run_demo

Row = tuple[float, str, str, str, str, tuple[str, ...], str]


def audited(db: Path) -> list[Row]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT ts, job_id, kind, action, outcome, gpus, detail FROM audit")
        return sorted((r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6]) for r in rows)
    finally:
        conn.close()


async def test_a_demo_run_exported_and_replayed_gives_the_demos_audit_decisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opts = DemoOptions(
        nodes=4,
        gpus_per_node=2,
        duration_s=18.0,
        seed=2,
        state_dir=tmp_path,
        sample_interval_s=0.25,
        report_interval_s=0.5,
        refresh_s=1.0,
        idle_window_s=3.0,
    )
    assert await run_demo(opts) == 0
    db = tmp_path / "gpuwarden.db"
    live = audited(db)
    assert {"warned", "dry_run"} <= {r[4] for r in live}, live

    trace = tmp_path / "trace.jsonl"
    capsys.readouterr()
    assert gpuwarden(["export", "--db", str(db), "--out", str(trace)]) == 0
    assert "jobs" in capsys.readouterr().err
    policy = demo_policy(opts)
    replayer, summary = replay_lines(trace.read_bytes().splitlines(), PolicySet(default=policy))
    assert summary.samples > 0 and summary.jobs > 0
    replayed = sorted(
        (r.ts, r.job_id, r.kind, r.action, r.outcome, r.gpus, r.detail)
        for r in (record_from_event(e, policy) for e in replayer.ladder_events)
    )
    # The collector stopped with its newest windows still in the reorder buffer: replay
    # sees them all, so it may have decided a little more, later; never differently before.
    cut = live[-1][0]
    assert [r for r in replayed if r[0] <= cut] == live


def test_export_refuses_a_missing_database_and_a_bad_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpuwarden(["export", "--db", str(tmp_path / "none.db")]) == 1
    assert "no collector database" in capsys.readouterr().err
    assert gpuwarden(["export", "--db", str(tmp_path / "x.db"), "--since", "soon"]) == 2
    assert "'soon' is not a time" in capsys.readouterr().err


def test_export_writes_each_run_once_with_its_end_and_only_what_the_filters_select(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpuwarden.collector.store import Store
    from gpuwarden.common.types import GpuWindow, JobInfo, NodeReport, SlurmStatus

    t0 = 1_700_000_000.0
    a = JobInfo(job_id="11", user="ann", partition="gpu", start_time=int(t0), requeue=True)
    b = JobInfo(
        job_id="12",
        user="bob",
        partition="debug",
        start_time=int(t0) + 100,
        dask_scheduler="tcp://10.0.0.5:8786",
        dask_worker="w-1",
    )
    store = Store(tmp_path / "c.db")
    reports = []
    for k in range(1, 11):
        held = a if k <= 5 else b if k >= 7 else None  # GPU free at k = 6
        gpus = (
            GpuWindow(uuid="GPU-0", index=0, util_max=1.0, util_mean=0.5, job=held),
            GpuWindow(uuid="GPU-1", index=1, util_max=90.0, job=None),
        )
        reports.append(NodeReport("n1", k, t0 + 20 * (k - 1), t0 + 20 * k, gpus, SlurmStatus()))
    store.write_reports(reports, received=t0)
    store.close()

    def export(*flags: str) -> list[dict[str, object]]:
        capsys.readouterr()
        assert gpuwarden(["export", "--db", str(tmp_path / "c.db"), *flags]) == 0
        return [json.loads(x) for x in capsys.readouterr().out.splitlines()]

    everything = export()
    jobs = [x for x in everything if x["type"] == "job"]
    assert [(j["job_id"], j["start"], j["end"], j["user"]) for j in jobs] == [
        ("11", t0, t0 + 100, "ann"),  # ended: its GPU was reported free after it
        ("12", t0 + 100, None, "bob"),  # still running as far as the store knows
    ]
    assert jobs[1]["dask"] == {"scheduler": "tcp://10.0.0.5:8786", "worker": "w-1"}
    samples = [x for x in everything if x["type"] == "sample"]
    assert len(samples) == 20 and samples[0]["window_s"] == 20.0
    assert samples[0]["util_gpu"] == 1.0 and samples[0]["util_gpu_mean"] == 0.5

    only_bob = export("--user", "bob")
    assert [x["job_id"] for x in only_bob if x["type"] == "job"] == ["12"]
    assert len([x for x in only_bob if x["type"] == "sample"]) == 4
    assert [x["job_id"] for x in export("--partition", "gpu") if x["type"] == "job"] == ["11"]
    assert [x["job_id"] for x in export("--job", "12") if x["type"] == "job"] == ["12"]
    late = export("--since", str(t0 + 150), "--until", str(t0 + 180))
    assert [x["ts"] for x in late if x["type"] == "sample" and x["uuid"] == "GPU-0"] == [
        t0 + 160,
        t0 + 180,
    ]
