"""Config files, environment overrides and the errors a sysadmin sees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpuwarden.agent.config import load_agent_config
from gpuwarden.collector.config import load_collector_config
from gpuwarden.collector.policy import load_policy
from gpuwarden.common.config import ConfigError
from gpuwarden.common.durations import parse_duration


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gpuwarden.toml"
    p.write_text(text)
    return p


def test_durations_accept_seconds_and_units() -> None:
    assert parse_duration(30) == 30.0
    assert parse_duration("90s") == 90.0
    assert parse_duration("15m") == 900.0
    assert parse_duration("2h") == 7200.0
    assert parse_duration("0.5") == 0.5
    assert parse_duration("2d") == 172800.0
    for bad in ("10 minutes", "-5", "1y", "", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_agent_config_from_file_with_environment_override(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[agent]\nnode = "gpu07"\nreport_interval = "10s"\ninsecure = true\nsampler = "sim"\n',
    )
    cfg = load_agent_config(path, environ={"GPUWARDEN_AGENT_REPORT_INTERVAL": "20s"})
    assert cfg.node_name == "gpu07"
    assert cfg.report_interval == 20.0
    assert cfg.sample_interval == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[agent]\nreport_intervall = 5\ninsecure = true\n", "[agent] report_intervall: unknown"),
        ('[agent]\nreport_interval = "5 min"\ninsecure = true\n', "[agent] report_interval"),
        (
            '[agent]\nsampler = "nvml-x"\ninsecure = true\n',
            "sampler: 'nvml-x' is not a known sampler (known: dcgm, nvml, sim)",
        ),
        ("[agent]\nspool_max_reports = 0\ninsecure = true\n", "spool_max_reports: 0 is below"),
        ('[agent]\ninsecure = "yes"\n', "[agent] insecure: expected true or false"),
        ("[agent]\n", "tls_ca, tls_cert and tls_key are required"),
        (
            '[agent]\ninsecure = true\nsample_interval = "10s"\nreport_interval = "5s"\n',
            "report_interval (5 s) is shorter than sample_interval (10 s)",
        ),
        ("[agent\n", "is not valid TOML"),
        (
            '[agent]\ninsecure = true\nslurm_backend = "rest"\n',
            "slurm_backend: 'rest' is not one of auto, cli, pyslurm",
        ),
    ],
)
def test_bad_agent_config_fails_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_agent_config(write(tmp_path, text), environ={})
    assert message in str(err.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="GPUWARDEN_COLLECTOR_RETENTION"):
        load_collector_config(
            None, {"insecure": True}, environ={"GPUWARDEN_COLLECTOR_RETENTION": "forever"}
        )


def test_commit_window_is_read_as_a_duration_and_bounded(tmp_path: Path) -> None:
    path = write(tmp_path, '[collector]\ninsecure = true\ncommit_window = "0.02s"\n')
    assert load_collector_config(path, environ={}).commit_window == 0.02
    env = {"GPUWARDEN_COLLECTOR_COMMIT_WINDOW": "0.05"}
    assert load_collector_config(path, environ=env).commit_window == 0.05
    with pytest.raises(ConfigError, match=r"\[collector\] commit_window: '2s' is above the max"):
        load_collector_config(
            write(tmp_path, '[collector]\ninsecure = true\ncommit_window = "2s"\n'), environ={}
        )


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        load_collector_config(tmp_path / "nope.toml")


def test_collector_paths_default_to_the_state_dir(tmp_path: Path) -> None:
    cfg = load_collector_config(
        write(tmp_path, f'[collector]\ninsecure = true\nstate_dir = "{tmp_path}"\n'), environ={}
    )
    assert cfg.database == tmp_path / "gpuwarden.db"
    assert cfg.audit_path == tmp_path / "audit.jsonl"


def test_command_line_flags_win_over_environment_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[agent]\ninsecure = true\nreport_interval = "10s"\n')
    env = {"GPUWARDEN_AGENT_REPORT_INTERVAL": "20s", "GPUWARDEN_AGENT_NODE": "envnode"}
    cfg = load_agent_config(path, {"report_interval": 30.0, "node": None}, environ=env)
    assert cfg.report_interval == 30.0  # flag
    assert cfg.node_name == "envnode"  # no flag given: the environment wins over the file


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[polcy]\nidle_window = "1h"\n', "[polcy]: unknown section, did you mean [policy]?"),
        ("[Policy]\nwarnings = 1\n", "[Policy]: unknown section, did you mean [policy]?"),
        (
            "[colector]\ninsecure = true\n",
            r"[colector]: unknown section, did you mean [collector]?",
        ),
        ("[frobnicate]\nx = 1\n", "[frobnicate]: unknown section (known: [agent], [collector]"),
        ("insecure = true\n", "insecure: a setting outside any section"),
    ],
)
def test_unknown_section_stops_every_loader_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text + "[collector]\ninsecure = true\n[agent]\ninsecure = true\n")
    for load in (load_collector_config, load_agent_config, load_policy):
        with pytest.raises(ConfigError) as err:
            load(path, environ={})
        assert message in str(err.value), load
        assert str(path) in str(err.value)


def test_a_misspelt_policy_subtable_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[policy.partiton.gpu]\nwarnings = 1\n")
    with pytest.raises(ConfigError, match=r"\[policy.partiton\]: unknown section, did you mean"):
        load_policy(path, environ={})


def test_a_misspelt_key_gets_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "[agent]\ninsecure = true\nreport_intervall = 5\n")
    with pytest.raises(ConfigError) as err:
        load_agent_config(path, environ={})
    assert str(err.value) == (
        "[agent] report_intervall: unknown setting, did you mean report_interval?"
    )
    path = write(tmp_path, "[policy]\nidle_windw = 5\n")
    with pytest.raises(ConfigError, match=r"did you mean idle_window\?"):
        load_policy(path, environ={})


def test_one_file_serves_collector_policy_and_agent(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[agent]\ninsecure = true\nnode = "n1"\n[collector]\ninsecure = true\n'
        '[policy]\nidle_window = "1h"\n[policy.partition.debug]\nwarnings = 0\n',
    )
    assert load_agent_config(path, environ={}).node == "n1"
    assert load_collector_config(path, environ={}).insecure
    assert load_policy(path, environ={}).partitions["debug"].warnings == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[collector]\ninsecure = true\nlisten = "50051"\n', "listen: '50051' is not HOST:PORT"),
        ('[collector]\ninsecure = true\nlisten = "h:70000"\n', "listen: port 70000 is not in"),
        ('[agent]\ninsecure = true\ncollector = "::1:5"\n', "collector: '::1:5' is not HOST:PORT"),
    ],
)
def test_addresses_are_checked_at_start(tmp_path: Path, text: str, message: str) -> None:
    load = load_agent_config if text.startswith("[agent]") else load_collector_config
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(write(tmp_path, text), environ={})
    assert load_collector_config(None, {"insecure": True, "listen": "[::1]:0"}, environ={})


def test_output_tables_share_the_file_and_a_misspelt_one_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[collector]\ninsecure = true\n[sinks.archive]\ntype = "jsonl"\npath = "w.jsonl"\n'
        '[notifiers.journal]\ntype = "log"\n',
    )
    assert load_collector_config(path, environ={}).insecure
    path = write(tmp_path, '[collector]\ninsecure = true\n[sink.archive]\ntype = "jsonl"\n')
    with pytest.raises(ConfigError, match=r"\[sink\]: unknown section, did you mean \[sinks\]\?"):
        load_collector_config(path, environ={})
