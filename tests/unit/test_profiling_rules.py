"""Detection and advice from profiling counters: the SM-activity rule (``active_sm_pct``),
training advice on the scenario traces, idle MIG slices, and the trace keys that carry the
counters (what a sysadmin tuning the rules on recorded data sees)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuwarden.collector.activity import Basis, window_activity
from gpuwarden.collector.policy import Policy
from gpuwarden.collector.replay_cli import replay_main
from gpuwarden.collector.rules import (
    MIB,
    Allocation,
    AllocationTracker,
    FindingKind,
    GpuRef,
)
from gpuwarden.collector.trace import TraceError, parse_sample
from gpuwarden.common.types import JobInfo

TRACES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
T0 = 1_700_000_000.0
W = 60.0
CARD = 81920 * MIB


def advice(capsys: pytest.CaptureFixture[str], trace: str, *flags: str) -> list[dict[str, str]]:
    assert replay_main([str(TRACES / f"{trace}.jsonl"), "--json", *flags]) == 0
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def codes(events: list[dict[str, str]]) -> list[str]:
    return [e["kind"] + ":" + e["detail"].split(":")[0] for e in events]


# ------------------------------------------------------------------ advice on scenario traces


def test_healthy_training_gets_no_advice(capsys: pytest.CaptureFixture[str]) -> None:
    assert advice(capsys, "train_healthy") == []


def test_high_duty_cycle_with_low_sm_activity_is_told_the_gpu_is_mostly_waiting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = advice(capsys, "train_gpu_waiting")
    assert codes(out) == ["advice:gpu_waiting"]
    detail = out[0]["detail"]
    assert "GPU busy 92.0% of the time but SMs active only 13.0% (< 30%)" in detail
    assert "larger batches, more data-loader workers" in detail


def test_busy_card_without_tensor_core_use_is_told_about_mixed_precision(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = advice(capsys, "train_no_tensor")
    assert codes(out) == ["advice:no_tensor_cores"]
    assert "tensor cores active 0.0% (< 1%)" in out[0]["detail"]
    assert "mixed precision (bf16/fp16) would be several times faster" in out[0]["detail"]


def test_saturated_cpu_behind_a_waiting_gpu_is_input_bound_with_its_sm_activity(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = advice(capsys, "train_input_bound")
    # the duty cycle (65 %) is no under-use: only SM activity shows the GPU waiting
    assert codes(out) == ["advice:input_bound"]
    assert "job CPU at 99% while the GPU averages 65.0% (SM activity 16.0%)" in out[0]["detail"]


def test_high_dram_with_idle_pipes_is_memory_bandwidth_bound(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = advice(capsys, "train_memory_bound")
    assert codes(out) == ["advice:memory_bound"]
    assert "memory bandwidth 88.0% of peak (>= 60%)" in out[0]["detail"]


def test_thresholds_of_the_training_advice_are_policy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text("[policy]\nsm_waiting_pct = 10\ntensor_unused_pct = 50\n")
    out = advice(capsys, "train_gpu_waiting", "--policy", str(policy))
    assert codes(out) == ["advice:no_tensor_cores"]  # 13 % SM is not waiting below 10 %


# ---------------------------------------------------------------- the SM-activity rule


def test_active_sm_pct_finds_a_busy_duty_cycle_with_little_sm_activity_idle(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert advice(capsys, "train_gpu_waiting", "--idle-window", "30m")[0]["kind"] == "advice"
    policy = tmp_path / "p.toml"
    policy.write_text("[policy]\nactive_sm_pct = 30\n")  # max SM activity stays <= 25 %
    out = advice(capsys, "train_gpu_waiting", "--policy", str(policy))
    assert codes(out)[1] == "advice:memory_held_idle"  # 60 GB held by an "idle" job
    out = [e for e in out if e["kind"] == "idle"]
    assert [e["action"] for e in out] == ["warn"] * 3
    assert "idle: max SM activity < 30% on the GPU for 30m" in out[0]["detail"]
    assert out[-1]["detail"].startswith("dry run: would requeue")


def tracker(policy: Policy) -> AllocationTracker:
    job = JobInfo(job_id="7", start_time=int(T0))
    return AllocationTracker(Allocation(job, (GpuRef("n1", "GPU-0", 0),)), policy)


def feed(t: AllocationTracker, until_s: float, util: float | None, sm: float | None) -> None:
    s = W
    while s <= until_s:
        t.add_values(0, T0 + s, W, util, None, 1000 * MIB, CARD, sm_active_max=sm)
        s += W


def test_without_sm_activity_the_rule_falls_back_to_utilisation_and_says_so() -> None:
    policy = Policy(active_sm_pct=20.0)
    t = tracker(policy)
    feed(t, 2400, 2.0, None)  # an NVML-only card: no SM activity
    [idle] = t.evaluate(T0 + 2400)
    assert idle.kind is FindingKind.IDLE
    assert idle.evidence[0].active_by == (Basis.UTIL_NO_SM,)
    assert idle.evidence[0].sm_active_max_pct is None
    assert "max util < 5% where no SM activity was reported" in idle.detail
    busy = tracker(policy)
    feed(busy, 2400, 90.0, None)
    assert busy.evaluate(T0 + 2400) == []


def test_sm_activity_decides_where_the_window_has_it_and_its_evidence_names_it() -> None:
    t = tracker(Policy(active_sm_pct=20.0))
    feed(t, 2400, 100.0, 8.0)  # 100 % duty cycle, 8 % of the SMs busy
    [idle] = t.evaluate(T0 + 2400)
    assert idle.evidence[0].active_by == (Basis.SM,)
    assert idle.evidence[0].sm_active_max_pct == 8.0
    off = tracker(Policy())  # off by default: the duty cycle decides
    feed(off, 2400, 100.0, 8.0)
    assert off.evaluate(T0 + 2400) == []


def test_missing_utilisation_and_sm_activity_stays_unknown_never_idle() -> None:
    t = tracker(Policy(active_sm_pct=20.0))
    feed(t, 4 * 3600, None, None)
    assert t.evaluate(T0 + 4 * 3600) == []
    assert t.windows_seen == 0


@pytest.mark.parametrize(
    ("policy", "args", "expected"),
    [
        (Policy(), (50.0, 3.0), (True, Basis.UTIL)),
        (Policy(active_sm_pct=20.0), (50.0, 3.0), (False, Basis.SM)),
        (Policy(active_sm_pct=20.0), (50.0, None), (True, Basis.UTIL_NO_SM)),
        (Policy(active_sm_pct=20.0), (None, None), (None, Basis.UNKNOWN)),
    ],
)
def test_window_activity_of_a_whole_gpu(
    policy: Policy, args: tuple[float | None, float | None], expected: tuple[object, Basis]
) -> None:
    assert window_activity(policy, *args) == expected


def test_window_activity_of_a_mig_slice_from_what_is_knowable() -> None:
    p = Policy()
    slice_bytes = 10240 * MIB

    def act(procs: int | None, used_mib: int | None, sm: float | None = None) -> object:
        used = None if used_mib is None else used_mib * MIB
        return window_activity(
            p,
            None,
            sm,
            mig=True,
            processes=procs,
            mem_used_bytes=used,
            mem_total_bytes=slice_bytes,
        )

    assert act(0, 12) == (False, Basis.MIG_EMPTY)
    assert act(1, 12) == (True, Basis.MIG_IN_USE)  # a process
    assert act(0, 4000) == (True, Basis.MIG_IN_USE)  # memory in use
    assert act(None, 12) == (None, Basis.UNKNOWN)  # processes unknown
    assert act(3, 6000, sm=0.0) == (False, Basis.SM)  # GPM's SM activity, where given
    assert act(0, 12, sm=40.0) == (True, Basis.SM)


def test_an_empty_mig_slice_is_found_idle_and_slices_in_use_are_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = advice(capsys, "mig_slices")
    assert {e["job_id"] for e in out} == {"1106"}  # 1107 holds memory, 1108 runs a process
    assert [e["action"] for e in out] == ["warn", "warn", "warn"]
    assert "MIG slice with no process and no memory in use" in out[0]["detail"]
    assert out[0]["gpus"] == ["MIG-3g-0"]


# ----------------------------------------------------------------------- trace keys


def sample(**extra: object) -> dict[str, object]:
    return {"type": "sample", "ts": T0, "node": "n1", "uuid": "GPU-0", "util_gpu": 50.0, **extra}


def test_profiling_fields_are_optional_trace_keys() -> None:
    s = parse_sample(
        sample(
            sm_active_pct=12.5,
            extra={"tensor_active_pct": 3.0, "nvlink_tx_bytes_per_s": 1e9},
            extra_max={"sm_active_pct": 30.0},
            processes=2,
        ),
        1,
    )
    assert s.extra_mean == {
        "tensor_active_pct": 3.0,
        "nvlink_tx_bytes_per_s": 1e9,
        "sm_active_pct": 12.5,
    }
    assert s.extra_max == {
        "sm_active_pct": 30.0,
        "tensor_active_pct": 3.0,
        "nvlink_tx_bytes_per_s": 1e9,
    }
    assert s.processes == 2
    plain = parse_sample(sample(), 1)
    assert (plain.extra_mean, plain.extra_max, plain.processes) == (None, None, None)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"sm_active_pct": "high"}, "sm_active_pct='high' is not a number"),
        ({"extra": {"Bad Name": 1.0}}, "name 'Bad Name' is not a short identifier"),
        ({"extra": [1, 2]}, "'extra' must be an object"),
        ({"extra": {"sm_active_pct": 1e30}}, "is beyond"),
        ({"sm_active_pct": 40.0, "extra_max": {"sm_active_pct": 10.0}}, "is below its mean"),
        ({"sm_active_pct": 40.0, "extra": {"sm_active_pct": 41.0}}, "disagrees with"),
        ({"processes": -1}, "'processes' must be a number of processes"),
        ({"processes": 1.5}, "'processes' must be a number of processes"),
    ],
)
def test_bad_profiling_keys_name_their_line_and_field(
    extra: dict[str, object], message: str
) -> None:
    with pytest.raises(TraceError, match="line 7: ") as info:
        parse_sample(sample(**extra), 7)
    assert message in str(info.value)
