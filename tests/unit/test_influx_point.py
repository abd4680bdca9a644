"""The line protocol the ``influxdb`` sink writes: strings as tags, numbers as fields,
missing values left out, and bad options refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.collector.outputs.config import load_sinks
from gpuwarden.collector.outputs.influx import window_point
from gpuwarden.common.config import ConfigError
from gpuwarden.common.types import GpuWindow, JobInfo, WindowRecord


def test_a_window_is_one_point_with_string_tags_and_number_fields() -> None:
    rec = WindowRecord(
        node="gpu 01",
        window_start=99.0,
        window_end=100.25,
        gpu=GpuWindow(
            uuid="GPU-1",
            index=3,
            name="A100 80GB",
            samples=5,
            util_mean=12.5,
            util_max=None,
            mem_used_max_bytes=1024,
            job=JobInfo(job_id="77", user="alice", account="phys", partition="gpu"),
            allocated=True,
            extra_mean={"sm_active_pct": 40.0},
            extra_max={"sm_active_pct": 60.0},
        ),
    )
    line = window_point(rec, "gpuwarden_gpu", "c1").to_line_protocol()
    tags = (
        r"gpuwarden_gpu,account=phys,cluster=c1,index=3,job=77,name=A100\ 80GB,"
        r"node=gpu\ 01,partition=gpu,user=alice,uuid=GPU-1 "
    )
    assert line.startswith(tags)
    fields, ts = line[len(tags) :].rsplit(" ", 1)
    assert "util_mean=12.5" in fields and "mem_used_max_bytes=1024i" in fields
    assert "sm_active_pct_mean=40," in fields and "sm_active_pct_max=60," in fields
    assert "util_max" not in fields  # missing stays missing, never 0
    assert "parent_uuid" not in line  # empty tags are left out
    assert ts == "100250"  # milliseconds


def test_a_window_without_a_job_has_no_job_tags() -> None:
    rec = WindowRecord("n", 0.0, 5.0, GpuWindow(uuid="GPU-2", index=0, samples=5))
    line = window_point(rec, "m").to_line_protocol()
    assert line.startswith("m,index=0,node=n,uuid=GPU-2 ")
    assert "allocated=0i" in line and "samples=5i" in line and "processes=0i" in line


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('url = "localhost:8428"', "url: 'localhost:8428' is not an http"),
        ('url = "http://x"\nmeasurement = "a b"', "measurement"),
        ('url = "http://x"\ntoken = "a"\ntoken_file = "f"', "token or token_file"),
        ('url = "http://x"\nbatch = 3', "batch"),
    ],
)
def test_bad_influxdb_options_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    doc = {"sinks": {"tsdb": {"type": "influxdb", **_toml(table)}}}
    with pytest.raises(ConfigError, match=message):
        load_sinks(doc, tmp_path)


def _toml(text: str) -> dict[str, object]:
    import tomllib

    return tomllib.loads(text)
