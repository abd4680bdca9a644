"""Durations as users write them, in config files and on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.cli import main
from gpuwarden.collector.config import load_collector_config
from gpuwarden.collector.policy import load_policy
from gpuwarden.collector.replay import replay_main
from gpuwarden.common.config import ConfigError
from gpuwarden.common.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1d", 86400.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("1.5d", 129600.0),
        ("36h", 129600.0),
        (".5h", 1800.0),
        ("0", 0.0),
    ],
)
def test_days_and_weeks_are_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["10 minutes", "1y", "d", "", "1d2", "nan", "inf", "1e3s"])
def test_what_is_not_a_duration_is_named_with_the_units_accepted(bad: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration \(.*d or w\)"):
        parse_duration(bad, what="[policy] idle_window")


@pytest.mark.parametrize("bad", ["-5m", "-1", -3, -0.5])
def test_a_negative_duration_says_it_must_not_be_negative(bad: object) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(bad)


def test_negative_flag_value_is_named_not_taken_for_an_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--idle-window", "-5m"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "argument --idle-window: '-5m': a duration must be positive" in err
    assert "expected one argument" not in err


def test_zero_idle_window_is_refused_for_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--idle-window", "0"])
    assert exit_.value.code == 2
    assert "argument --idle-window: '0': a duration must be positive" in capsys.readouterr().err


def test_replay_flags_accept_days_and_refuse_negative_durations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert replay_main(["-", "--idle-window", "-5m"]) == 2
    err = capsys.readouterr().err
    assert "argument --idle-window: '-5m': a duration must be positive" in err
    assert replay_main(["-", "--grace-period=-1h"]) == 2
    assert "argument --grace-period: '-1h': a duration must not be negative" in (
        capsys.readouterr().err
    )


def test_flag_durations_in_days(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--duration", "1d", "--nodes", "0"])  # stops at --nodes, not at 1d
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == "gpuwarden demo: error: argument --nodes: '0' must be at least 1"


def test_config_files_and_environment_take_the_same_durations(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(
        '[policy]\nidle_window = "1d"\n[collector]\ninsecure = true\nretention = "2w"\n'
    )
    assert load_policy(path, environ={}).default.idle_window == 86400.0
    assert load_collector_config(path, environ={}).retention == 14 * 86400.0
    with pytest.raises(ConfigError) as err:
        load_policy(path, environ={"GPUWARDEN_POLICY_GRACE_PERIOD": "-5m"})
    assert str(err.value) == "GPUWARDEN_POLICY_GRACE_PERIOD: '-5m': a duration must not be negative"
