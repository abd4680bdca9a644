"""``gpuwarden jobstats`` text for a constructed summary, character for character; notes;
the JSON form round-trips; ``gpuwarden report`` table and CSV."""

from __future__ import annotations

import datetime as dt
import json

from gpuwarden.common.jobstats import (
    GpuStats,
    IdlePeriod,
    JobStats,
    WasteRow,
    job_stats_from_json,
)
from gpuwarden.common.types import AuditRecord
from gpuwarden.query.jobstats_format import (
    bar,
    format_jobstats,
    format_waste,
    job_notes,
    jobstats_json,
    waste_csv,
)

T0 = 1_700_000_000.0
GIB = 1 << 30
UTC = dt.UTC


def two_gpu_job() -> JobStats:
    return JobStats(
        job_id="4242",
        user="alice",
        account="physics",
        partition="gpu",
        name="train",
        state="ended",
        start=T0,
        end=T0 + 7200,
        last_seen=T0 + 7200,
        cpu_util_mean_pct=97.0,
        gpus=(
            GpuStats(
                "gpu01", "GPU-a", 0, "A100", 7200, 1800, 22.5, 99.0, 6 * GIB, 80 * GIB, 180.0,
                idle_periods=(IdlePeriod(T0 + 1800, T0 + 7200),),
            ),
            GpuStats(
                "gpu01", "GPU-b", 1, "A100", 7200, 0, 0.0, 0.0, 1 * GIB, 80 * GIB, 60.0,
                idle_periods=(IdlePeriod(T0 + 60, T0 + 7200),),
            ),
        ),
        decisions=(
            AuditRecord(
                T0 + 5400, "4242", "idle", "warn", "warned", True, ("GPU-a", "GPU-b"),
                "GPUs idle for 60 min; warning 1 of 2",
            ),
        ),
        source="summary",
    )  # fmt: skip


EXPECTED = """\
================================================================================
                               GPU Job Statistics
================================================================================
        Job ID:  4242
          User:  alice
       Account:  physics
     Partition:  gpu
         State:  ended
    Start Time:  2023-11-14 22:13:20
      End Time:  2023-11-15 00:13:20
  Elapsed Time:  2h 00m
          GPUs:  2 on 1 node
CPU Efficiency:  97%

================================================================================
                              Overall Utilization
================================================================================
  GPU utilization  ███▍░░░░░░░░░░░░░░░░░░░░░░░░░░  11%
  GPU memory peak  ██▎░░░░░░░░░░░░░░░░░░░░░░░░░░░   8%

================================================================================
                              Detailed Utilization
================================================================================
  GPU utilization (mean, max):
    gpu01 GPU 0 █████▍░░░░░░░░░░░░░░░░░░  22%  99%
    gpu01 GPU 1 ░░░░░░░░░░░░░░░░░░░░░░░░   0%   0%
  Peak GPU memory (GiB of the card):
    gpu01 GPU 0 █▊░░░░░░░░░░░░░░░░░░░░░░ 6.0 / 80.0
    gpu01 GPU 1 ▎░░░░░░░░░░░░░░░░░░░░░░░ 1.0 / 80.0
  Mean power, time active:
    gpu01 GPU 0   180 W, active 25% of 2h 00m reported
    gpu01 GPU 1    60 W, active 0% of 2h 00m reported
  Idle periods:
    gpu01 GPU 0 11-14 22:43 to 11-15 00:13 (1h 30m)
    gpu01 GPU 1 11-14 22:14 to 11-15 00:13 (1h 59m)

================================================================================
                                     Notes
================================================================================
  * 1 of the 2 GPUs were never used. Ask for 1 GPU next time (--gres=gpu:1), or
    make your code use all of them (e.g. DistributedDataParallel).
  * The GPUs were idle after the first 30m 00s (from 11-14 22:43 to 11-15
    00:13). End the job, or release the GPUs, when the work is done.
  * Mean GPU utilisation is low (11%). Larger batches, more data-loader workers
    or fewer GPUs may help.
  * The job's CPUs were busy (97%) while the GPUs waited (11%): it looks
    input-bound. More CPU cores or data-loader workers, or pre-processed data,
    may help.
  * Peak GPU memory was 6.0 GiB of 80 GiB: a smaller GPU or a MIG slice would
    do, and is usually easier to get.

================================================================================
                              Warnings and Actions
================================================================================
  11-14 23:43 idle warn [warned] (dry run)
    GPUs idle for 60 min; warning 1 of 2"""


def test_the_text_of_a_constructed_summary_is_exactly_as_expected_and_fits_80_columns() -> None:
    text = format_jobstats(two_gpu_job(), tz=UTC)
    assert text == EXPECTED
    assert max(len(line) for line in text.splitlines()) <= 80


def test_colour_is_only_added_when_asked_for() -> None:
    assert "\x1b[" not in format_jobstats(two_gpu_job(), tz=UTC)
    coloured = format_jobstats(two_gpu_job(), color=True, tz=UTC)
    assert "\x1b[31m" in coloured  # low utilisation in red
    assert coloured.replace("\x1b[31m", "").replace("\x1b[0m", "").replace("\x1b[1m", "") == (
        EXPECTED
    )


def test_bars_fill_in_eighths_and_clamp() -> None:
    assert bar(0, 4) == "░░░░"
    assert bar(50, 4) == "██░░"
    assert bar(100, 4) == "████"
    assert bar(250, 4) == "████"
    assert bar(12.5 / 4 * 4 / 4, 4) == "▏░░░"  # 3.125 % of 4 cells = one eighth


def test_a_job_that_never_used_its_gpu_is_told_so_and_nothing_else() -> None:
    s = JobStats(
        job_id="7",
        gpus=(GpuStats("n1", "GPU-x", 0, util_mean_pct=0.0, util_max_pct=1.0),),
    )
    notes = job_notes(s)
    assert len(notes) == 1 and notes[0].startswith("This job did not use its GPU:")


def test_profiling_fields_give_advice_where_they_exist() -> None:
    busy = GpuStats(
        "n1", "GPU-x", 0, util_mean_pct=90.0, util_max_pct=100.0,
        sm_active_mean_pct=12.0, tensor_active_mean_pct=0.0,
    )  # fmt: skip
    notes = job_notes(JobStats(job_id="8", gpus=(busy,)))
    assert any("SMs were active only 12%" in n for n in notes)
    assert any("Tensor cores were not used" in n for n in notes)
    plain = GpuStats("n1", "GPU-x", 0, util_mean_pct=90.0, util_max_pct=100.0)
    assert job_notes(JobStats(job_id="8", gpus=(plain,))) == []


def test_json_carries_notes_and_reads_back_as_the_same_summary() -> None:
    s = two_gpu_job()
    data = json.loads(json.dumps(jobstats_json(s, tz=UTC)))
    assert data["elapsed_s"] == 7200 and len(data["notes"]) == 5
    assert data["gpus"][1]["idle_periods"] == [{"start": T0 + 60, "end": T0 + 7200}]
    assert job_stats_from_json(data) == s


def test_report_table_and_csv() -> None:
    rows = [
        WasteRow("user", "alice", 2, 10.0, 2.5, 7.5, 1.0),
        WasteRow("account", "physics", 2, 10.0, 2.5, 7.5, 1.0),
        WasteRow("partition", "gpu", 2, 10.0, 2.5, 7.5, 1.0),
    ]
    text = format_waste(rows, T0, tz=UTC)
    assert text.splitlines()[:4] == [
        "GPU-hours since 2023-11-14 22:13:20",
        "",
        "user   jobs  allocated    active      idle  reclaimed  idle %",
        "alice     2       10.0       2.5       7.5        1.0     75%",
    ]
    assert waste_csv(rows).splitlines()[:2] == [
        "by,key,jobs,allocated_h,active_h,idle_h,reclaimed_h",
        "user,alice,2,10.000,2.500,7.500,1.000",
    ]
    assert format_waste([], T0, tz=UTC).endswith("no jobs in this period")
