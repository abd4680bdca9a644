"""Sample lines of a replay trace: every value is checked whatever its JSON type, and a
number reads the same written as an integer or with a fraction."""

from __future__ import annotations

from typing import Any

import pytest

from gpuwarden.collector.trace import TraceError, loads, parse_sample

BASE = (
    b'{"type":"sample","ts":1700000060,"node":"n1","uuid":"GPU-a","index":0,'
    b'"util_gpu":7.5,"mem_used_mib":30000,"mem_total_mib":81920,"power_w":60.0}'
)


def sample(**changes: Any) -> dict[str, Any]:
    d: dict[str, Any] = loads(BASE)
    d.update(changes)
    return {k: v for k, v in d.items() if v is not ...}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ts": -1}, "'ts' must be a finite time"),
        ({"ts": "1700000060"}, "'ts' must be a number"),
        ({"ts": ...}, "'ts' is missing"),
        ({"util_gpu": -0.5}, "'util_gpu' is out of range"),
        ({"util_gpu": 101}, "'util_gpu' is out of range"),
        ({"util_gpu": True}, "'util_gpu' must be a number"),
        ({"util_gpu_mean": 9.0}, "'util_gpu_mean' (9) exceeds util_gpu (7.5)"),
        ({"mem_used_mib": -1}, "'mem_used_mib' is out of range"),
        ({"mem_used_mib": 2_000_000_000}, "'mem_used_mib' is out of range"),
        ({"mem_used_mib": "30000"}, "'mem_used_mib' must be a number"),
        ({"mem_used_mib": False}, "'mem_used_mib' must be a number"),
        ({"mem_total_mib": -2.5}, "'mem_total_mib' is out of range"),
        ({"mem_total_mib": [81920]}, "'mem_total_mib' must be a number"),
        ({"power_w": -60.0}, "'power_w' is out of range"),
        ({"power_w": 200_000}, "'power_w' is out of range"),
        ({"power_w": "60"}, "'power_w' must be a number"),
        ({"util_mem": 250}, "'util_mem' is out of range"),
        ({"cpu_util_pct": -3}, "'cpu_util_pct' is out of range"),
        ({"window_s": 0}, "'window_s' is out of range"),
        ({"index": -2}, "'index' must be a GPU index"),
        ({"processes": -1}, "'processes' must be a number of processes"),
    ],
)
def test_a_bad_value_names_its_line_and_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(TraceError) as err:
        parse_sample(sample(**changes), 42)
    assert str(err.value).startswith("line 42: ")
    assert message in str(err.value)


def test_a_number_reads_the_same_with_or_without_a_fraction() -> None:
    whole = parse_sample(
        sample(ts=1700000060, util_gpu=7, mem_used_mib=30000, mem_total_mib=81920, power_w=60),
        1,
    )
    fraction = parse_sample(
        sample(
            ts=1700000060.0,
            util_gpu=7.0,
            mem_used_mib=30000.0,
            mem_total_mib=81920.0,
            power_w=60.0,
        ),
        1,
    )
    assert whole == fraction
    assert [type(v) for v in whole] == [type(v) for v in fraction]
    assert whole.mem_used_bytes == 30000 * 1024 * 1024
    assert type(whole.util_max_pct) is float and type(whole.power_w) is float


def test_null_values_are_unknown_and_absent_keys_too() -> None:
    s = parse_sample(
        sample(util_gpu=None, mem_used_mib=None, mem_total_mib=..., power_w=..., index=...), 1
    )
    assert (s.util_max_pct, s.mem_used_bytes, s.mem_total_bytes, s.power_w, s.gpu_index) == (
        None,
        None,
        None,
        None,
        -1,
    )
