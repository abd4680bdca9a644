"""Policy loading: documented defaults, TOML with partition overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.collector.policy import Policy, load_policy
from gpuwarden.common.config import ConfigError
from gpuwarden.common.types import JobInfo


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_numbers_of_the_design() -> None:
    p = load_policy(None, environ={}).default
    assert (p.active_util_pct, p.idle_window, p.grace_period) == (5.0, 1800.0, 600.0)
    assert (p.gpu_frac, p.underuse_pct, p.warnings, p.warn_interval) == (0.0, 25.0, 2, 900.0)
    assert p.enforce is False  # dry run until enabled
    assert p.allow_cancel is False
    assert p.mig_mem_pct == 20.0


def test_partition_table_overrides_only_its_keys_and_inherits_the_rest(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[policy]\nidle_window = "1h"\nwarnings = 3\n\n'
        '[policy.partition.debug]\nidle_window = "10m"\nenforce = true\n',
    )
    ps = load_policy(path, environ={})
    debug = ps.for_job(JobInfo(job_id="1", partition="debug"))
    other = ps.for_job(JobInfo(job_id="2", partition="gpu"))
    assert (debug.idle_window, debug.warnings, debug.enforce) == (600.0, 3, True)
    assert (other.idle_window, other.warnings, other.enforce) == (3600.0, 3, False)


def test_bad_partition_value_names_the_table_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[policy.partition.gpu]\nidle_window = "soon"\n')
    with pytest.raises(ConfigError, match=r"\[policy.partition.gpu\] idle_window"):
        load_policy(path, environ={})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[policy]\nidle_windw = 5\n", r"\[policy\] idle_windw: unknown setting"),
        ("[policy]\nwarnings = -1\n", r"\[policy\] warnings: -1 is below the minimum 0"),
        ("[policy]\nidle_window = 0\n", r"\[policy\] idle_window: 0 is below the minimum 1"),
        ("[policy]\nrequeue_mode = 'hold'\n", r"requeue_mode: 'hold' is not one of"),
        ("[policy]\ngpu_frac = 1.5\n", r"gpu_frac: 1.5 is above the maximum 1"),
        ("[policy]\nenforce = 'yes'\n", r"\[policy\] enforce: expected true or false"),
        ("[policy]\ncancel_interactive = true\n", r"cancel_interactive: needs allow_cancel"),
        (
            "[policy]\naction_backoff = '10m'\naction_backoff_max = '1m'\n",
            r"action_backoff_max: 60 s is shorter than action_backoff",
        ),
        ("idle_window = '1h'\n", r"idle_window: policy settings belong in a \[policy\] table"),
        ("[policy]\npartition = 3\n", r"\[policy.partition\]: expected tables"),
        ("[policy]\nexempt_users = [3]\n", r"exempt_users: expected a list of strings"),
    ],
)
def test_bad_policy_is_rejected_naming_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_policy(write(tmp_path, toml), environ={})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "nope.toml", environ={})


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[policy]\nidle_window = "1h"\nwarnings = 5\n')
    env = {"GPUWARDEN_POLICY_IDLE_WINDOW": "20m", "GPUWARDEN_POLICY_WARNINGS": "4"}
    p = load_policy(path, {"warnings": 1}, environ=env).default
    assert p.idle_window == 1200.0  # environment beats the file
    assert p.warnings == 1  # a flag beats the environment


def test_exemptions_match_users_accounts_qos_name_globs_and_nodes() -> None:
    p = Policy(
        exempt_users=("bob",),
        exempt_accounts=("ops",),
        exempt_qos=("debug",),
        exempt_job_names=("jupyter-*",),
        exempt_nodes=("gpu-test*",),
    )
    assert p.exemption(JobInfo(job_id="1", user="bob")) == "user bob is exempt"
    assert p.exemption(JobInfo(job_id="1", account="ops")) == "account ops is exempt"
    assert p.exemption(JobInfo(job_id="1", qos="debug")) == "QOS debug is exempt"
    assert "jupyter-*" in (p.exemption(JobInfo(job_id="1", name="jupyter-lab")) or "")
    assert "gpu-test*" in (p.exemption(JobInfo(job_id="1"), ["gpu01", "gpu-test2"]) or "")
    assert p.exemption(JobInfo(job_id="1", user="alice", name="train"), ["gpu01"]) is None
