"""The dashboard's model without Textual: what the header counts, how jobs are filtered and
sorted, how waste is counted, and what the confirmation dialog promises."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gpuwarden.common.types import (
    AuditRecord,
    GpuState,
    GpuWindow,
    JobInfo,
    NodeState,
    ProcessInfo,
)
from gpuwarden.tui.actions import describe, exempt_duration
from gpuwarden.tui.model import Dashboard, JobFilter, SortKey
from tests.helpers import REPO

T0 = 1_800_000_000.0


def node(name: str, end: float, *gpus: tuple[str, float | None, int]) -> NodeState:
    """gpus: (job id or '', utilisation, processes)."""
    states = []
    for i, (job_id, util, procs) in enumerate(gpus):
        job = (
            JobInfo(
                job_id, user=f"u{job_id}", account="acc", partition="gpu", start_time=int(T0) - 3600
            )
            if job_id
            else None
        )
        w = GpuWindow(
            uuid=f"{name}-{i}",
            index=i,
            util_max=util,
            job=job,
            allocated=job is not None,
            processes=tuple(ProcessInfo(pid=100 + k) for k in range(procs)),
        )
        states.append(GpuState(window_end=end, latest=w))
    return NodeState(node=name, last_seen=end, connected=True, gpus=tuple(states))


def test_idle_time_is_counted_per_job_between_windows_and_not_across_long_gaps() -> None:
    m = Dashboard()
    for k in range(4):  # 3 gaps of 60 s, job 1 idle with a process, job 2 busy
        m.apply(node("n1", T0 + 60 * k, ("1", 0.0, 1), ("2", 90.0, 1)), T0 + 60 * k)
    m.apply(node("n1", T0 + 3600, ("1", 0.0, 1), ("2", 90.0, 1)), T0 + 3600)  # a long gap
    rows = {r.job_id: r for r in m.jobs()}
    assert rows["1"].waste_gpu_h == pytest.approx(180 / 3600)
    assert rows["2"].waste_gpu_h == 0.0
    assert rows["1"].state == "idle" and rows["2"].state == "busy"
    assert rows["1"].age_s == pytest.approx(7200)


def test_an_idle_finding_gives_a_job_its_waste_before_the_dashboard_saw_it() -> None:
    m = Dashboard()
    m.apply(node("n1", T0, ("7", 0.0, 0), ("7", 0.0, 0)), T0)
    m.add_record(
        AuditRecord(
            ts=T0,
            job_id="7",
            kind="idle",
            action="warn",
            outcome="warned",
            dry_run=False,
            gpus=("n1-0", "n1-1"),
            detail="",
            evidence={"finding": {"since_ts": T0 - 1800}, "policy": {"enforce": True}},
        )
    )
    (row,) = m.jobs()
    assert row.waste_gpu_h == pytest.approx(1.0)  # 2 GPUs x 30 min
    f = m.figures()
    assert (f.gpus, f.allocated, f.idle, f.open_findings) == (2, 2, 2, 1)
    assert f.enforcement == "on"


def test_filters_match_fields_by_prefix_and_words_anywhere() -> None:
    m = Dashboard()
    m.apply(node("gpu01", T0, ("11", 0.0, 1), ("12", 50.0, 1)), T0)
    m.apply(node("gpu02", T0, ("21", 0.0, 0)), T0)
    ids = lambda text: {r.job_id for r in m.rows(JobFilter.parse(text))}  # noqa: E731
    assert ids("user:u1") == {"11", "12"}
    assert ids("state:idle") == {"11"}
    assert ids("STATE:EMPTY") == {"21"}
    assert ids("node:gpu02") == {"21"}
    assert ids("gpu01 u12") == {"12"}
    assert ids("") == {"11", "12", "21"}
    with pytest.raises(ValueError, match="'colour' is not a filter"):
        JobFilter.parse("colour:red")
    with pytest.raises(ValueError, match="give a value"):
        JobFilter.parse("user:")


def test_sorting_puts_waste_first_and_missing_values_last() -> None:
    m = Dashboard()
    m.apply(node("n1", T0, ("3", 0.0, 1), ("1", 80.0, 1), ("2", 20.0, 1)), T0)
    m.apply(node("n1", T0 + 60, ("3", 0.0, 1), ("1", 80.0, 1), ("2", 20.0, 1)), T0 + 60)
    m.apply(node("n2", T0, ("4", None, 0)), T0)
    assert next(r.job_id for r in m.rows(key=SortKey.WASTE)) == "3"
    assert [r.job_id for r in m.rows(key=SortKey.UTIL)] == ["3", "2", "1", "4"]
    assert [r.job_id for r in m.rows(key=SortKey.UTIL, reverse=True)] == ["1", "2", "3", "4"]


def test_the_dialog_says_what_happens_in_dry_run_and_with_enforcement() -> None:
    m = Dashboard()
    m.apply(node("n1", T0, ("5", 0.0, 0)), T0)
    (row,) = m.jobs()
    dry = describe("requeue", row, "dry-run")
    assert "nothing happens to job 5 of u5 (1 GPU on n1)" in dry and "would requeue" in dry
    on = describe("requeuehold", row, "on")
    assert "this happens now" in on and "scontrol release 5" in on
    assert "alone for 2h" in describe("exempt", row, "on", duration_s=7200, now=T0)
    assert "Nothing is done to the job" in describe("warn", row, "?")
    assert exempt_duration("90m") == 5400
    with pytest.raises(ValueError, match="at most 30d"):
        exempt_duration("31d")


def test_top_without_textual_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['textual'] = None\n"
        "from gpuwarden.cli import main\n"
        "sys.exit(main(['top', '--insecure']))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert "pip install 'gpuwarden[tui]'" in r.stderr
    assert "Traceback" not in r.stderr


def test_headless_modules_of_the_dashboard_import_no_textual() -> None:
    code = (
        "import sys\n"
        "import gpuwarden.tui.model, gpuwarden.tui.actions, gpuwarden.tui.history\n"
        "import gpuwarden.tui.command, gpuwarden.cli\n"
        "sys.exit(1 if 'textual' in sys.modules else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60, check=False)
    assert r.returncode == 0
