"""The one-row-per-report layout: every field a reader uses comes back as stored,
duplicates and failed transactions leave no trace, roll-up sums survive a crash between
their writes exactly once, and a version-1 store is migrated in place."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from gpuwarden.collector import layout, rollup_pending
from gpuwarden.collector.export import ExportFilter, export_trace
from gpuwarden.collector.store import Store, StoreError
from gpuwarden.common.convert import gpu_from_pb, gpu_to_pb
from gpuwarden.common.types import (
    GpuWindow,
    JobInfo,
    NodeReport,
    ProcessInfo,
    SlurmStatus,
    WindowRecord,
)
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

T0 = 1_700_000_000.0
FIXTURE = Path(__file__).parent.parent / "fixtures" / "store_v1.db"


def job(start: int = 1_700_000_000, cpu: float | None = 37.5) -> JobInfo:
    return JobInfo(
        job_id="4242_7",
        step="batch",
        user="alice",
        account="physics",
        partition="gpu",
        name="train",
        qos="high",
        batch=False,
        requeue=True,
        start_time=start,
        dask_scheduler="tcp://10.0.0.5:8786",
        dask_worker="SLURMCluster-3",
        source="cgroup",
        cpu_util_pct=cpu,
    )


def full_gpus(seq: int) -> tuple[GpuWindow, ...]:
    return (
        GpuWindow(
            uuid="GPU-aaaa",
            index=0,
            name="NVIDIA H100 80GB HBM3",
            samples=5,
            util_mean=33.4 + seq,
            util_max=97.0,
            util_min=0.0,
            zero_frac=0.2,
            mem_util_mean=12.25,
            mem_used_max_bytes=(31 << 30) + seq,
            mem_total_bytes=80 << 30,
            power_mean_w=412.123456789,
            temperature_c=61.0,
            processes=(ProcessInfo(4242, 1 << 30, "python"), ProcessInfo(99, None, "")),
            errors=("xid:79", "ecc_uncorrected:3"),
            job=job(cpu=None if seq % 2 else 12.5 * seq),
            allocated=True,
            extra_mean={"sm_active_pct": 31.25, "tensor_active_pct": 2.5},
            extra_max={"sm_active_pct": 88.0},
            minor_number=3,
        ),
        GpuWindow(
            uuid="MIG-bbbb",
            index=1,
            name="NVIDIA H100 80GB HBM3 MIG 3g.40gb",
            parent_uuid="GPU-bbbb",
            samples=5,
            util_mean=0.0,
            util_max=0.0,
            job=job(start=1_700_003_600),  # another run of the job: other facts
            allocated=True,
            minor_number=4,
            gpu_instance_id=2,
            mig_caps_minor=29,
        ),
        GpuWindow(uuid="GPU-cccc", index=2, errors=("gpu_lost",)),  # nothing measured
    )


def reports(n: int, node: str = "n1", first: int = 1) -> list[NodeReport]:
    return [
        NodeReport(
            node=node,
            seq=s,
            window_start=T0 + 5 * s,
            window_end=T0 + 5 * s + 5,
            gpus=full_gpus(s),
            slurm=SlurmStatus(available=s % 4 != 0, error="" if s % 4 else "timeout"),
            agent_id="agent-1",
        )
        for s in range(first, first + n)
    ]


def records(rs: list[NodeReport]) -> list[WindowRecord]:
    return [WindowRecord(r.node, r.window_start, r.window_end, g) for r in rs for g in r.gpus]


def test_every_field_a_reader_uses_comes_back_whether_received_messages_or_objects(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "db")
    rs = reports(6)
    # the windows' messages as a stream parses them off the wire
    received = [
        [pb.GpuWindow.FromString(gpu_to_pb(g).SerializeToString()) for g in r.gpus] for r in rs[:3]
    ]
    assert store.write_reports(rs[:3], T0, received) == [True] * 3
    assert store.write_reports(rs[3:], T0) == [True] * 3
    got, truncated = store.history(node="n1", resolution=0)
    assert not truncated and got == records(rs)
    # by GPU, by job (both runs), through the filters' own paths
    assert store.history(uuid="MIG-bbbb", resolution=0)[0] == [
        rec for rec in records(rs) if rec.gpu.uuid == "MIG-bbbb"
    ]
    by_job, _ = store.history(job_id="4242_7", resolution=0, since=T0 + 20, until=T0 + 30)
    assert [(r.window_end, r.gpu.uuid) for r in by_job] == [
        (T0 + 20, "GPU-aaaa"),
        (T0 + 20, "MIG-bbbb"),
        (T0 + 25, "GPU-aaaa"),
        (T0 + 25, "MIG-bbbb"),
        (T0 + 30, "GPU-aaaa"),
        (T0 + 30, "MIG-bbbb"),
    ]
    assert store.job_user("4242_7") == "alice" and store.job_user("1") is None
    assert store.job_ids(T0 + 30) == ["4242_7"] and store.job_ids(T0 + 99) == []
    limited, truncated = store.history(node="n1", resolution=0, limit=4)
    assert truncated and limited == records(rs)[:4]
    store.close()
    again = Store(tmp_path / "db")  # a fresh reader: its dictionaries come from the file
    assert again.history(node="n1", resolution=0)[0] == records(rs)
    assert again.count_windows() == 18 and again.count_reports() == 6


def test_what_the_dictionaries_hold_is_stored_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    store.write_reports(reports(50), T0)
    db = store.writer
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 2  # two runs' facts
    assert db.execute("SELECT count(*) FROM gpus").fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM report_jobs").fetchone()[0] == 100
    # a window's bytes hold neither its identity nor its job's facts
    (data,) = db.execute("SELECT data FROM reports LIMIT 1").fetchone()
    for _, _, window in layout.unpack(data):
        stripped = gpu_from_pb(pb.GpuWindow.FromString(window))
        assert stripped.uuid == "" and stripped.name == ""
        assert stripped.job is None or stripped.job.job_id == ""


def test_retention_deletes_the_facts_of_jobs_no_stored_report_names(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    store.write_reports(reports(50), T0)
    old = NodeReport("n1", 51, T0, T0 + 5, (GpuWindow(uuid="GPU-x", index=0, job=JobInfo("1")),))
    store.write_reports([old], T0)
    jobs = "SELECT job_id, count(*) FROM jobs GROUP BY job_id ORDER BY job_id"
    assert store.writer.execute(jobs).fetchall() == [("1", 1), ("4242_7", 2)]
    assert store.prune(older_than=T0 + 100) == 3 * 18 + 1  # seq 1-18 and seq 51
    assert store.writer.execute(jobs).fetchall() == [("4242_7", 2)]
    # the job comes back: its facts are stored again and read back whole
    store.write_reports([NodeReport("n1", 52, T0 + 500, T0 + 505, old.gpus)], T0)
    assert store.history(job_id="1", resolution=0)[0][0].gpu == old.gpus[0]
    assert store.job_user("4242_7") == "alice"


def test_duplicates_in_one_batch_and_across_batches_are_stored_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    rs = reports(3)
    assert store.write_reports([rs[0], rs[1], rs[0]], T0) == [True, True, False]
    changed = NodeReport("n1", 2, T0, T0 + 1, (GpuWindow(uuid="GPU-zzzz", index=7),))
    assert store.write_reports([changed, rs[2]], T0) == [False, True]
    assert store.history(node="n1", resolution=0)[0] == records(rs)
    assert store.count_windows() == 9 and store.last_seqs() == {"n1": 3}


def test_a_failed_transaction_leaves_no_dictionary_entry_behind(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    new_job = JobInfo(job_id="9", user="carol")
    ok = NodeReport("n2", 1, T0, T0 + 5, (GpuWindow(uuid="GPU-new", index=0, job=new_job),))
    bad = NodeReport(
        "n2", 2, T0, T0 + 5, (GpuWindow(uuid="GPU-new", index=0, mem_used_max_bytes=2**64),)
    )
    with pytest.raises(OverflowError, match="mem_used_max_bytes"):
        store.write_reports([ok, bad], T0)
    assert store.count_reports() == 0
    assert store.writer.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
    assert store.write_reports([ok], T0) == [True]  # its facts are written again, and read
    assert store.history(job_id="9", resolution=0)[0][0].gpu.job == new_job


def _rollups(path: Path) -> list[tuple[object, ...]]:
    """The roll-up rows, sums rounded (added in another order, they differ in the last bit)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT * FROM rollups ORDER BY res, node, uuid, job_id, bucket")
        return [tuple(round(v, 6) if isinstance(v, float) else v for v in r) for r in rows]


def test_rollup_sums_survive_a_crash_between_their_writes_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = reports(40) + reports(40, node="n2")
    # the reference: the same reports, all sums written at a clean close
    ref = Store(tmp_path / "ref")
    ref.write_reports(everything, T0)
    ref.close()

    monkeypatch.setattr(rollup_pending, "FLUSH_AFTER_S", 0.0)  # every node due at once
    crashed = Store(tmp_path / "db")
    crashed.write_reports(everything[:30] + everything[40:50], T0)
    crashed.write_reports(everything[30:35], T0)  # writes the first sums in its transaction
    monkeypatch.setattr(rollup_pending, "FLUSH_AFTER_S", 3600.0)
    crashed.write_reports(everything[35:40] + everything[50:70], T0)  # held in memory
    crashed.history(node="n2", resolution=60)  # a read writes n2's sums, not n1's (older)
    crashed.write_reports(everything[70:], T0)  # held in memory only
    assert _rollups(tmp_path / "db") != _rollups(tmp_path / "ref")
    # SIGKILL: the open store is never closed; its pending sums are gone with it
    for suffix in ("", "-wal"):
        shutil.copy(f"{tmp_path / 'db'}{suffix}", f"{tmp_path / 'copy'}{suffix}")
    crashed.close()  # (the one that was not killed writes what it held, once)
    assert _rollups(tmp_path / "db") == _rollups(tmp_path / "ref")
    first = Store(tmp_path / "copy")  # adds the missing reports again, from the file
    for suffix in ("", "-wal"):
        shutil.copy(f"{tmp_path / 'copy'}{suffix}", f"{tmp_path / 'copy2'}{suffix}")
    first.close()
    assert _rollups(tmp_path / "copy") == _rollups(tmp_path / "ref")
    # killed again after the recovery but before writing: recovered once more, not twice
    Store(tmp_path / "copy2").close()
    assert _rollups(tmp_path / "copy2") == _rollups(tmp_path / "ref")


def test_a_report_is_pruned_only_after_its_rollup_sums_are_written(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    store.write_reports(reports(30), T0)  # sums pending in memory
    assert store.prune(older_than=T0 + 1000) == 90
    for suffix in ("", "-wal"):  # killed now: the raw rows are gone, the sums must not be
        shutil.copy(f"{tmp_path / 'db'}{suffix}", f"{tmp_path / 'copy'}{suffix}")
    store.close()
    hours, _ = Store(tmp_path / "copy").history(job_id="4242_7", resolution=3600)
    assert sum(r.gpu.samples for r in hours) == 30 * 2 * 5


def test_a_rollup_read_sees_windows_whose_sums_are_still_pending(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    store.write_reports(reports(24), T0)  # two minutes
    minutes, _ = store.history(job_id="4242_7", resolution=60)
    assert sum(r.gpu.samples for r in minutes) == 24 * 2 * 5


def _v1_windows(path: Path) -> list[WindowRecord]:
    with sqlite3.connect(path) as db:
        return [
            WindowRecord(n, ws, we, gpu_from_pb(pb.GpuWindow.FromString(d)))
            for n, ws, we, d in db.execute(
                "SELECT node, window_start, window_end, data FROM windows ORDER BY window_end, id"
            )
        ]


def test_a_version_1_store_is_migrated_in_place_with_everything_readable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    shutil.copy(FIXTURE, path)
    expected = _v1_windows(path)
    rollups = _rollups(path)
    with sqlite3.connect(path) as db:
        keys = db.execute("SELECT node, seq FROM reports ORDER BY node, seq").fetchall()
    assert len(expected) == 174 and len(keys) == 60  # 2 reports had no GPU windows

    store = Store(path)
    got, truncated = store.history(since=0, resolution=0, limit=1000)
    assert not truncated and got == expected
    assert store.count_windows() == 174 and store.count_reports() == 60
    assert store.last_seqs() == {"node0": 30, "node1": 30}
    assert store.job_user("701") == "bob"
    assert _rollups(path) == rollups  # roll-ups were complete: kept, not counted again
    # every report key still de-duplicates, the GPU-less one included
    old = NodeReport("node0", 13, 0, 5)
    assert store.write_reports([old], T0) == [False]
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("2",)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "windows" not in tables and "reports_v1" not in tables
    assert _rollups(path) == rollups  # closing wrote no pending sums for migrated reports
    out = tmp_path / "trace.jsonl"
    with out.open("wb") as f:
        summary = export_trace(path, f, ExportFilter())
    assert summary.samples == 174 and summary.jobs == 4  # 2 jobs x 2 runs (requeued)


def test_a_migration_that_fails_leaves_the_version_1_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db"
    shutil.copy(FIXTURE, path)
    expected = _v1_windows(path)
    calls = 0
    real = layout.Writer.rows

    def failing(self: layout.Writer, *args: object) -> layout.ReportRows:
        nonlocal calls
        calls += 1
        if calls == 40:
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(layout.Writer, "rows", failing)
    with pytest.raises(StoreError, match="disk I/O error"):
        Store(path)
    assert _v1_windows(path) == expected
    monkeypatch.setattr(layout.Writer, "rows", real)
    store = Store(path)  # the next start migrates it
    assert store.history(since=0, resolution=0, limit=1000)[0] == expected
    store.close()
