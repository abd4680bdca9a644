"""``gpuwarden replay`` on the scenario traces: the exact lines a sysadmin should see."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpuwarden.collector.replay_cli import replay_main

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000


def replay_json(
    capsys: pytest.CaptureFixture[str], trace: str, *flags: str
) -> list[tuple[int, str, str, list[str]]]:
    assert replay_main([str(TRACES / f"{trace}.jsonl"), "--json", *flags]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    for line in out:
        assert list(line) == ["ts", "job_id", "kind", "action", "gpus", "detail"]
    return [(d["ts"] - T0, d["kind"], d["action"], d["gpus"]) for d in out]


A = ["GPU-aaaa"]
IDLE_LADDER = [(2400, "idle", "warn", A), (3300, "idle", "warn", A)]


def test_busy_job_gets_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_json(capsys, "busy") == []


def test_idle_from_start_warns_twice_then_would_requeue(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_json(capsys, "idle_from_start") == [*IDLE_LADDER, (4200, "idle", "warn", A)]
    assert replay_main([str(TRACES / "idle_from_start.jsonl"), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["detail"].startswith("dry run: would requeue")


def test_idle_from_start_with_enforce_requeues(capsys: pytest.CaptureFixture[str]) -> None:
    got = replay_json(capsys, "idle_from_start", "--enforce")
    assert got == [*IDLE_LADDER, (4200, "idle", "requeue", A)]


def test_used_briefly_then_idle_is_caught(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_json(capsys, "brief_then_idle", "--enforce") == [
        (3000, "idle", "warn", A),
        (3900, "idle", "warn", A),
        (4800, "idle", "requeue", A),
    ]


def test_bursty_short_gaps_never_idle_long_gaps_only_warn(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert replay_json(capsys, "bursty", "--enforce") == [
        (4260, "underused", "none", A),
        (4260, "advice", "none", A),  # use_mig: 4000 MiB of 80 GiB
        (9000, "idle", "warn", A),  # 40 min between bursts: warned, reset by the next burst
        (11400, "idle", "warn", A),
        (13800, "idle", "warn", A),
    ]


def test_memory_held_while_idle_is_advised(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_main([str(TRACES / "memory_held_idle.jsonl"), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(d["ts"] - T0, d["kind"], d["action"]) for d in lines] == [
        (2400, "idle", "warn"),
        (2400, "advice", "none"),
        (3300, "idle", "warn"),
    ]
    assert lines[1]["detail"].startswith("memory_held_idle: GPU memory held while idle (30000 MiB")


def test_low_but_nonzero_use_is_reported_not_enforced(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_main([str(TRACES / "low_use.jsonl"), "--json", "--enforce"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(d["ts"] - T0, d["kind"], d["action"], d["detail"].split(":")[0]) for d in lines] == [
        (4260, "underused", "none", "mean GPU utilisation 8.0% over the last 1h00m (< 25%)"),
        (4260, "advice", "none", "input_bound"),
        (4260, "advice", "none", "use_mig"),
    ]


def test_multi_gpu_partly_idle_reports_only_the_idle_gpus(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert replay_json(capsys, "multi_gpu_partly_idle") == []  # gpu_frac 0 by default
    policy = tmp_path / "p.toml"
    policy.write_text("[policy]\ngpu_frac = 0.5\nenforce = true\n")
    assert replay_json(capsys, "multi_gpu_partly_idle", "--policy", str(policy)) == [
        (2400, "idle", "none", ["GPU-b1", "GPU-b2", "GPU-b3"])
    ]


def test_idle_dask_worker_is_released(capsys: pytest.CaptureFixture[str]) -> None:
    got = replay_json(capsys, "dask_worker_idle", "--enforce")
    assert got == [*IDLE_LADDER, (4200, "idle", "release_dask_worker", A)]


@pytest.mark.parametrize("trace", ["not_requeueable", "interactive"])
def test_jobs_that_cannot_be_requeued_are_only_warned(
    capsys: pytest.CaptureFixture[str], trace: str
) -> None:
    got = replay_json(capsys, trace, "--enforce")
    assert got == [(t, "idle", "warn", A) for t in (2400, 3300, 4200, 5100, 6000, 6900)]


def test_agent_outage_never_counts_towards_idle(capsys: pytest.CaptureFixture[str]) -> None:
    # 20 min (minus lost reports) before a 30 min outage; the streak restarts after it
    assert replay_json(capsys, "agent_gaps", "--enforce") == [
        (5340, "idle", "warn", A),
        (6240, "idle", "warn", A),
        (7140, "idle", "requeue", A),
    ]


def test_flags_change_the_policy(capsys: pytest.CaptureFixture[str]) -> None:
    got = replay_json(
        capsys,
        "idle_from_start",
        "--enforce",
        "--idle-window",
        "10m",
        "--grace-period",
        "0",
        "--warnings",
        "1",
        "--warn-interval",
        "5m",
    )
    assert got == [(600, "idle", "warn", A), (900, "idle", "requeue", A)]


def test_exempt_user_gets_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text('[policy]\nexempt_users = ["alice"]\n')
    assert replay_json(capsys, "idle_from_start", "--policy", str(policy)) == []


def test_table_output_has_a_summary_of_reclaimable_gpu_hours(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert replay_main([str(TRACES / "idle_from_start.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "dry run (enforcement off): would have taken: requeue 1" in out
    # requeued at T0+4200 of a job ending at T0+7200: 3000 s of one GPU
    assert "GPU-hours that would have been reclaimed: 0.8" in out


def bad_trace(tmp_path: Path, line: str) -> Path:
    good = (TRACES / "idle_from_start.jsonl").read_text().splitlines()
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([*good[:5], line, *good[5:]]) + "\n")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        (
            '{"type":"sample","ts":1700000400,"node":"gpu01","uuid":"GPU-aaaa","util_gpu":NaN}',
            "not valid JSON",
        ),
        (
            '{"type":"sample","ts":1700000400,"node":"gpu01","uuid":"GPU-aaaa"}',
            "'util_gpu' is missing",
        ),
        (
            '{"type":"sample","ts":1700000400,"node":"gpu01","uuid":"GPU-aaaa","util_gpu":"5"}',
            "'util_gpu' must be a number",
        ),
        (
            '{"type":"sample","ts":1700000400,"node":"gpu01","uuid":"GPU-aaaa","util_gpu":150}',
            "'util_gpu' is out of range",
        ),
        ('{"type":"gpu","ts":1}', "'type' must be 'job' or 'sample'"),
        ('{"type":"job","job_id":"9","start":1700000000,"gpus":[]}', "'gpus' must be"),
        ('{"type":"job","job_id":9,"start":1700000000,"gpus":[]}', "'job_id' must be a string"),
        ("[1, 2]", "expected a JSON object"),
        (
            '{"type":"sample","ts":1600000000,"node":"gpu01","uuid":"GPU-aaaa","util_gpu":0}',
            "sorted by ts",
        ),
    ],
)
def test_malformed_line_exits_2_naming_its_line_and_prints_no_results(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, line: str, message: str
) -> None:
    assert replay_main([str(bad_trace(tmp_path, line)), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "line 6: " in captured.err
    assert message in captured.err


def test_bad_flag_and_missing_file_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_main(["x.jsonl", "--idle-window", "soon"]) == 2
    assert "--idle-window: 'soon' is not a duration" in capsys.readouterr().err
    assert replay_main(["/nonexistent/trace.jsonl"]) == 2
    assert "cannot read /nonexistent/trace.jsonl" in capsys.readouterr().err


def test_reads_stdin_with_dash(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (TRACES / "idle_from_start.jsonl").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert replay_main(["-", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_module_runs_as_a_command() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpuwarden.collector.replay_cli",
            "--json",
            "--enforce",
            str(TRACES / "dask_worker_idle.jsonl"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    actions = [json.loads(x)["action"] for x in proc.stdout.splitlines()]
    assert actions == ["warn", "warn", "release_dask_worker"]


def test_committed_traces_are_what_the_generator_makes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gen_trace.py"), "--scenarios", str(tmp_path)],
        check=True,
    )
    for path in sorted(TRACES.glob("*.jsonl")):
        assert (tmp_path / path.name).read_text() == path.read_text(), path.name


def test_jobs_ending_at_the_same_time_and_gpus_of_no_job(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = []
    for job_id, uuid in (("1", "GPU-x"), ("2", "GPU-y")):
        lines.append(
            {
                "type": "job",
                "job_id": job_id,
                "start": T0,
                "end": T0 + 3000,
                "requeue": True,
                "gpus": [{"node": "n1", "uuid": uuid, "index": 0}],
            }
        )
    for t in range(60, 3001, 60):
        for uuid in ("GPU-x", "GPU-y", "GPU-free"):
            lines.append(
                {
                    "type": "sample",
                    "ts": T0 + t,
                    "node": "n1",
                    "uuid": uuid,
                    "util_gpu": 0.0,
                    "comment": "ignored",
                }
            )
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert replay_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 jobs, 150 samples" in out
    assert "50 samples of no job" in out
    assert out.count(" idle ") == 4  # two warnings each; ended before any action


def test_a_sample_belongs_to_the_newest_job_line_covering_its_time() -> None:
    from gpuwarden.collector.policy import PolicySet
    from gpuwarden.collector.trace import parse_job, parse_sample
    from gpuwarden.collector.trace_attribution import TraceAttribution

    attribution = TraceAttribution(PolicySet())
    gpus = [{"node": "n1", "uuid": "GPU-a", "index": 0}]
    for line_no, (job_id, start, end) in enumerate([("1", 0, None), ("2", 100, 200)], 1):
        d = {"type": "job", "job_id": job_id, "start": start, "end": end, "gpus": gpus}
        attribution.add_job(*parse_job(d, line_no))
    holders = []
    for ts in (50, 150, 200, 250):
        s = {"type": "sample", "ts": ts, "node": "n1", "uuid": "GPU-a", "util_gpu": 0.0}
        holder = attribution.holder(parse_sample(s, 3))
        holders.append(None if holder is None else holder.job.job_id)
    assert holders == ["1", "2", "2", "1"]


def test_back_to_back_jobs_on_one_gpu_are_one_run_each(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A job that starts the moment the last one ended (a busy Slurm partition): the window
    that ends at that instant is the old job's, so each job is one run and no window is
    counted twice. Before, the new job's start was taken first, the old job's last window
    then ended it, and each hand-over split into three runs: 4 idle jobs showed as 99 % idle
    over 4.05 GPU-hours."""
    lines = []
    for n in range(4):
        start = T0 + n * 7200
        gpus = [{"node": "n1", "uuid": "GPU-a", "index": 0}]
        lines.append(
            {"type": "job", "job_id": str(1000 + n), "start": start, "end": start + 7200,
             "requeue": True, "gpus": gpus}
        )  # fmt: skip
        for t in range(start + 60, start + 7201, 60):
            lines.append({"type": "sample", "ts": t, "node": "n1", "uuid": "GPU-a", "util_gpu": 0})
    path = tmp_path / "back-to-back.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert replay_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 jobs, 480 samples" in out
    assert "GPU-hours observed: 4.0; idle (>= idle_window, reported time): 4.0 (100 %)" in out
    assert "would have taken: requeue 4" in out


def test_the_window_ending_as_a_job_starts_is_the_previous_jobs() -> None:
    """A sample ends its window: at the very instant a job starts the window behind it is
    the previous job's, wherever the job lines stand in the trace."""
    from gpuwarden.collector.policy import PolicySet
    from gpuwarden.collector.trace import parse_job, parse_sample
    from gpuwarden.collector.trace_attribution import TraceAttribution

    attribution = TraceAttribution(PolicySet())
    gpus = [{"node": "n1", "uuid": "GPU-a", "index": 0}]
    for line_no, (job_id, start, end) in enumerate([("1", 0, 100), ("2", 100, 200)], 1):
        d = {"type": "job", "job_id": job_id, "start": start, "end": end, "gpus": gpus}
        attribution.add_job(*parse_job(d, line_no))
    holders = []
    for ts in (0, 60, 100, 160, 200):
        s = {"type": "sample", "ts": ts, "node": "n1", "uuid": "GPU-a", "util_gpu": 0.0}
        holder = attribution.holder(parse_sample(s, 3))
        holders.append(None if holder is None else holder.job.job_id)
    assert holders == [None, "1", "1", "2", "2"]
