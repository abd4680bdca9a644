"""``gpuwarden jobstats`` and ``gpuwarden report`` on a demo run: a real collector, real gRPC,
simulated nodes whose first jobs end within seconds (high churn). A finished job's summary
was written when its run ended; jobstats prints it as text and JSON, and still does after
retention pruned every raw window. A running job is summarised from its windows."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from gpuwarden.cli import main as gpuwarden
from gpuwarden.collector.server import Collector
from gpuwarden.demo import DemoOptions, run_demo


def summarised_jobs(db: Path) -> list[tuple[str, float, float, str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT job_id, start, end_ts, user FROM job_summaries")
        return sorted((str(r[0]), float(r[1]), float(r[2]), str(r[3])) for r in rows)
    finally:
        conn.close()


async def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = await asyncio.to_thread(gpuwarden, list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


async def test_jobstats_of_a_finished_demo_job_as_text_and_json_also_after_pruning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opts = DemoOptions(
        nodes=4,
        gpus_per_node=2,
        duration_s=10.0,
        seed=5,
        state_dir=tmp_path,
        sample_interval_s=0.25,
        report_interval_s=0.5,
        refresh_s=1.0,
        idle_window_s=2.0,
        churn_per_h=400.0,  # the first jobs live ~9 s on average: some end, some run on
    )
    assert await run_demo(opts) == 0
    db = tmp_path / "gpuwarden.db"
    finished = summarised_jobs(db)
    assert finished, "no job run ended during the demo"
    job_id, start, end, user = finished[0]
    assert end > start and user

    collector = Collector(db_path=db, listen="127.0.0.1:0")
    await collector.start()
    try:
        where = ("--insecure", "--collector", f"127.0.0.1:{collector.port}")
        rc, text, err = await cli(capsys, "jobstats", job_id, "--no-color", *where)
        assert rc == 0, err
        lines = text.splitlines()
        assert max(len(x) for x in lines) <= 80
        assert f"Job ID:  {job_id}" in text and f"User:  {user}" in text
        assert "State:  ended" in text and "GPU utilization (mean, max):" in text
        assert "\x1b[" not in text

        rc, out, _ = await cli(capsys, "jobstats", job_id, "--json", *where)
        data = json.loads(out)
        assert rc == 0 and data["job_id"] == job_id and data["state"] == "ended"
        assert data["source"] == "summary" and data["end"] == pytest.approx(end)
        assert data["gpus"] and all(g["reported_s"] > 0 for g in data["gpus"])
        assert isinstance(data["notes"], list)

        running = sorted(set(collector.store.job_ids(0.0)) - {j for j, *_ in finished})
        assert running
        rc, out, _ = await cli(capsys, "jobstats", running[0], "--json", *where)
        running_json = json.loads(out)
        assert rc == 0 and running_json["source"] == "windows"
        assert running_json["state"] == "running"

        rc, table, _ = await cli(capsys, "report", "--since", "1h", *where)
        assert rc == 0 and table.startswith("GPU-hours since") and user in table
        rc, csv_text, _ = await cli(capsys, "report", "--since", "1h", "--csv", *where)
        assert csv_text.splitlines()[0] == "by,key,jobs,allocated_h,active_h,idle_h,reclaimed_h"

        # Retention drops every raw window: the finished job's summary remains.
        assert collector.store.prune(float("inf")) > 0
        assert collector.store.count_windows() == 0
        rc, again, _ = await cli(capsys, "jobstats", job_id, "--no-color", *where)
        assert rc == 0 and again == text
        # The running job asked for before is kept up to date in memory: pruning its old
        # windows changes nothing of its figures so far.
        rc, out, _ = await cli(capsys, "jobstats", running[0], "--json", *where)
        assert rc == 0 and json.loads(out)["gpus"] == running_json["gpus"]
        rc, _, err = await cli(capsys, "jobstats", "999999", *where)
        assert rc == 1 and "knows no job 999999" in err
    finally:
        await collector.stop()
